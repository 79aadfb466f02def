"""``cpi controlled compare``: the agreement of two runs of one config in two precisions, on fabricated
run folders whose differences are known."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi.cli import main
from cpi.io import atomic_write_json, atomic_write_table, save_run
from experiments.controlled.agreement import compare_runs
from experiments.controlled.config import ControlledConfig


def _verdict(verdict, rise, fall):
    v = {"verdict": verdict}
    for name, (x, lo, hi) in (("rise", rise), ("fall", fall), ("net", (0.0, -0.1, 0.1))):
        v.update({name: x, f"{name}_lo": lo, f"{name}_hi": hi})
    return v


def _run(folder, dtype, margins, outcomes, answers, verdict, rise, fall, known, **config):
    """A run folder: seed 0, steps 0 and 4, items i0..i3 (``margins`` etc. per step, in item order)."""
    cfg = ControlledConfig(dtype=dtype, **config)
    save_run(folder, cfg, dtype=dtype)
    (folder / "config.json").replace(folder / "controlled_config.json")
    rows = [{"seed": 0, "checkpoint": f"checkpoint-{step}", "step": step, "item_id": f"i{k}",
             "logp_context": m, "logp_parametric": 0.0, "margin": m, "outcome": o, "answer_text": t,
             "cf_correct": o == "context"}
            for step in (0, 4) for k, (m, o, t) in enumerate(zip(margins[step], outcomes[step], answers[step]))]
    atomic_write_table(pd.DataFrame(rows), folder / "items.csv")
    atomic_write_json(folder / "verdict.json", {"primary": "margin", "margin": _verdict(verdict, rise, fall)})
    atomic_write_table(pd.DataFrame({"item_id": [f"f{k}" for k in range(4)], "known": known}),
                       folder / "knowledge" / "m-key" / "known.csv")
    return folder


@pytest.fixture
def pair(tmp_path):
    a = _run(tmp_path / "a", "float32", {0: [1.0, 2.0, -1.0, 0.5], 4: [2.0, 2.0, 0.0, 1.0]},
             {0: ["context", "context", "parametric", "both"], 4: ["context"] * 4},
             {0: ["x", "y", "z", "w"], 4: ["x"] * 4}, "no significant change", (0.2, 0.0, 0.4), (0.1, -0.1, 0.3),
             [True, True, False, True])
    b = _run(tmp_path / "b", "bfloat16", {0: [1.0, 2.5, -1.0, 0.5], 4: [2.0, 1.0, 0.0, 1.25]},
             {0: ["context", "context", "parametric", "both"], 4: ["context", "parametric", "context", "context"]},
             {0: ["x", "y", "z", "v"], 4: ["x", "q", "x", "x"]}, "rise, no significant fall", (0.5, 0.45, 0.6),
             (0.1, -0.1, 0.3), [True, False, False, True])
    return a, b


def test_known_differences_are_measured(pair):
    ag = compare_runs(*pair, n_boot=200)
    assert ag.dtypes == ("float32", "bfloat16")
    assert ag.knowledge == {"n_facts": 4, "known_differs": 0.25, "n_known_differs": 1}
    steps = ag.steps.set_index(["seed", "step"])
    s0, s4 = steps.loc[("ALL", 0)], steps.loc[("ALL", 4)]
    assert (s0.n, s0.outcome_differs, s0.answer_differs) == (4, 0.0, 0.25)
    assert s0.margin_absdiff_max == pytest.approx(0.5) and s0.margin_absdiff_mean == pytest.approx(0.125)
    assert (s4.outcome_differs, s4.answer_differs) == (0.25, 0.25)
    assert s4.margin_absdiff_max == pytest.approx(1.0) and s4.margin_absdiff_mean == pytest.approx(1.25 / 4)
    assert steps.loc[(0, 4)].n == 4 and steps.loc[(0, 4)].n_only_a == 0
    v = ag.verdicts.set_index("metric").loc["margin"]
    assert not v.same_verdict and not v.rise_overlap and v.fall_overlap and v.net_overlap
    assert v.same_fall   # "no significant change" / "rise, no significant fall": neither reports a fall
    assert v.diff_b_minus_a == pytest.approx((0.0 - 1.0 + 0.0 + 0.25) / 4) and v.paired and v.n_pairs == 4


def test_the_fall_decision_is_compared_apart_from_the_label(tmp_path):
    from experiments.controlled.agreement import agreement_lines, verdict_agreement

    items = pd.DataFrame({"seed": [0], "step": [0], "item_id": ["i0"]})
    rows = verdict_agreement({"margin": _verdict("rise then fall", (1, 0.5, 2), (1, 0.5, 2))},
                             {"margin": _verdict("fall (no significant rise)", (0, -1, 1), (1, 0.4, 2))}, items, items)
    assert bool(rows.loc[0, "same_fall"]) and not bool(rows.loc[0, "same_verdict"])
    rows = verdict_agreement({"margin": _verdict("rise then fall", (1, 0.5, 2), (1, 0.5, 2))},
                             {"margin": _verdict("rise, no significant fall", (1, 0.5, 2), (0, -1, 1))}, items, items)
    assert not bool(rows.loc[0, "same_fall"])
    from experiments.controlled.agreement import Agreement

    ag = Agreement(a=tmp_path, b=tmp_path, dtypes=("float32", "bfloat16"), knowledge={},
                   steps=pd.DataFrame({"seed": []}), verdicts=rows)
    assert "fall test DIFFERS (a significant fall / no significant fall)" in "\n".join(agreement_lines(ag))


def test_items_only_in_one_run_are_counted_not_compared(pair):
    a, b = pair
    items = pd.read_csv(b / "items.csv")
    atomic_write_table(items[items["item_id"] != "i3"], b / "items.csv")
    s = compare_runs(a, b, n_boot=50).steps.set_index(["seed", "step"]).loc[("ALL", 4)]
    assert (s.n, s.n_only_a, s.n_only_b) == (3, 1, 0)
    assert s.margin_absdiff_max == pytest.approx(1.0) and s.margin_absdiff_mean == pytest.approx(1.0 / 3)


def test_cli_prints_and_writes_tables_and_refuses_other_configs(pair, tmp_path, capsys):
    a, b = pair
    assert main(["controlled", "compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--n-boot", "100"]) == 0
    text = capsys.readouterr().out
    assert "A = " in text and "(float32)" in text and "'known' differs for 1 of 4 facts (25.0%)" in text
    assert "margin: verdicts DIFFER" in text and "rise DO NOT overlap" in text
    assert "fall test agrees (no significant fall / no significant fall)" in text
    assert len(pd.read_csv(tmp_path / "cmp" / "agreement_steps.csv")) == 4  # 2 seed x step rows + 2 ALL rows
    assert json.loads((tmp_path / "cmp" / "config.json").read_text())["meta"]["dtypes"] == ["float32", "bfloat16"]
    other = _run(tmp_path / "c", "bfloat16", {0: [0.0] * 4, 4: [0.0] * 4}, {0: ["both"] * 4, 4: ["both"] * 4},
                 {0: ["x"] * 4, 4: ["x"] * 4}, "no significant change", (0, 0, 0), (0, 0, 0), [True] * 4,
                 seeds=(0, 1))
    code = main(["controlled", "compare", str(a), str(other)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "field 'seeds' differs" in err, err
    code = main(["controlled", "compare", str(a), str(tmp_path / "nothing")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no items.csv" in err
    assert main(["controlled", "compare", str(a)]) == 2
    assert "field 'b': give a controlled run folder" in capsys.readouterr().err
