"""The main job's CI form, ``cpi run --quick``, on the real SmolLM2-135M-Instruct: the theory figures, the
theory's parameters measured before training, the four conditions of the decisive comparison, every table
and figure complete."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi.cli import main
from experiments.main_job import MAIN_CONDITIONS, MainConfig


@pytest.mark.real
@pytest.mark.slow
def test_quick_main_job_on_smollm2(real_smollm2, tmp_path, capsys):
    cfg = MainConfig.quick().experiment
    out = tmp_path / "quick"
    code = main(["run", "--quick", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "closed-book known rate, CF_World_Facts" in text
    # the prediction is printed before the experiment's outcome
    assert text.index("before training -- the theory's parameters") < text.index("] verdict (")
    assert all(f"prediction [{name}]" in text for name in MAIN_CONDITIONS)
    assert text.count("] verdict (") == 4 * 3 and all(f"[{name}]" in text for name in MAIN_CONDITIONS)  # 3 metrics each
    assert "verdict error rates at this design (1 seeds x 8 items x 3 checkpoints" in text
    assert "outside - inside, M_C = p_ctx / (p_ctx + p_mem), step 4:" in text and "paired on 8" in text
    assert "theory (stated before training) vs outcome" in text and "[positive_control_20] POSITIVE CONTROL" in text
    regime = pd.read_csv(next((out / "regime").glob("*/regime.csv")))
    assert set(regime["arm"]) == set(MAIN_CONDITIONS) and regime["delta_m"].between(0, 1).all()
    assert set(regime["theory_class"]) <= {"C", "C+S inside", "C+S outside"}
    steps = [0, 2, 4]
    for name in MAIN_CONDITIONS:
        run = out / name
        rates = pd.read_csv(run / "rates.csv")
        assert set(rates["dataset"]) == {"CF_World_Facts"} and rates["known_rate"].between(0, 1).all()
        assert int(rates.loc[rates["category"] == "ALL", "n"].iloc[0]) == cfg.knowledge.max_items
        counts = pd.read_csv(run / "counts.csv").iloc[0]
        assert counts["evaluated"] == cfg.evaluate.max_items
        assert (counts["CS"] == 0) == (name == "control")  # the control has no non-context-critical records
        items = pd.read_csv(run / "items.csv")
        assert sorted(items["step"].unique()) == steps
        assert items.groupby("step").size().tolist() == [cfg.evaluate.max_items] * 3
        assert items["cf_correct"].notna().all() and items["margin"].notna().all() and items["m_c"].between(0, 1).all()
        probe = pd.read_csv(run / "probe_steps.csv")
        assert sorted(probe["step"].unique()) == steps and probe["attn_context"].between(0, 1).all()
        verdict = json.loads((run / "verdict.json").read_text())
        verdict = verdict[verdict["primary"]]
        assert verdict["metric"] == "m_c" and verdict["steps"] == steps and verdict["n_units"] == cfg.evaluate.max_items
    # the conditions share their held-out items (paired comparisons)
    ids = {name: sorted(pd.read_csv(out / name / "items.csv")["item_id"].unique()) for name in MAIN_CONDITIONS}
    assert all(v == ids["inside"] for v in ids.values())
    assert set(pd.read_csv(out / "verdicts.csv")["condition"]) == set(MAIN_CONDITIONS)
    figures = out / "figures"
    for name in ("theory_trajectory", "controlled_inside_trajectory", "controlled_control_trajectory",
                 "controlled_inside_theory_overlay", "controlled_sweep"):
        assert (figures / f"{name}.png").stat().st_size > 1000, name
    assert (figures / "regime_plane.png").stat().st_size > 1000
