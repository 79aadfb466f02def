"""CLI smoke: cpi probe / probe-intervene / probe-link on a tiny trajectory; bad input exits 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi.cli import main
from tests.mechinterp.helpers import conflict_items, make_trajectory, write_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    run = make_trajectory(root / "run", "neox", steps=(5, 15))
    data = write_jsonl(conflict_items(4), root / "items.jsonl")
    return root, run, data


def test_probe_intervene_link(setup, tmp_path, capsys):
    root, run, data = setup
    out = tmp_path / "probe"
    assert main(["probe", "--checkpoints", str(run), "--dataset", str(data), "--out", str(out),
                 "--batch-size", "3", "--max-items", "3"]) == 0
    table = pd.read_csv(out / "probe.csv")
    assert sorted(table["step"].unique()) == [5, 15]
    assert set(table["n"][table.category == "ALL"]) == {3}
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["max_items"] == 3 and meta["meta"]["weights"] == "raw_hf"
    for fig in ("attention_context_vs_subject.png", "value_contributions.png", "attention_change_heatmap.png"):
        assert (out / "figures" / fig).stat().st_size > 1000
    iv = tmp_path / "iv"
    assert main(["probe-intervene", "--checkpoint", str(run / "checkpoint-5"), "--dataset", str(data),
                 "--heads", "1.*", "--mode", "value", "--out", str(iv)]) == 0
    items = pd.read_csv(iv / "intervention_items.csv")
    assert len(items) == 4 and (items["heads"] == "1.0,1.1,1.2,1.3").all()
    theory = pd.DataFrame({"step": [0, 1, 2], "attn_context_test": [0.5, 0.8, 0.6],
                           "attn_subject_test": [0.5, 0.2, 0.4], "M_C": [0.4, 0.7, 0.5]})
    theory.to_csv(tmp_path / "theory.csv", index=False)
    ev = pd.DataFrame({"step": [5, 15], "dataset": "CF_Test", "category": "ALL", "cf_acc": [0.5, 0.25]})
    ev.to_csv(tmp_path / "summary.csv", index=False)
    ln = tmp_path / "link"
    assert main(["probe-link", "--probe", str(out), "--theory", str(tmp_path / "theory.csv"),
                 "--eval-summary", str(tmp_path / "summary.csv"), "--out", str(ln)]) == 0
    for name in ("theory_link.csv", "correlation.csv", "head_change.csv", "head_change_summary.csv",
                 "theory_link.png", "correlation.png"):
        assert (ln / name).is_file(), name
    corr = pd.read_csv(ln / "correlation.csv")
    assert list(corr["cf_acc"]) == [0.5, 0.25]


def test_bad_input_exits_2(setup, tmp_path, capsys):
    root, run, data = setup
    assert main(["probe", "--checkpoints", str(run), "--dataset", str(tmp_path / "nope.jsonl"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    assert main(["probe", "--checkpoints", str(tmp_path / "no_such_dir"), "--dataset", str(data),
                 "--out", str(tmp_path / "o2")]) == 2
    assert main(["probe-intervene", "--checkpoint", str(run / "checkpoint-5"), "--dataset", str(data),
                 "--heads", "7.0", "--out", str(tmp_path / "o3")]) == 2
    assert "7.0 does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_probe_intervene_in_a_fresh_process(setup, tmp_path):
    """`cpi probe-intervene` as a user runs it: nothing imported beforehand (the lazy `mechinterp.probe`
    function once shadowed the submodule of the same name there, and the command crashed)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root, run, data = setup
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "cpi.cli", "probe-intervene", "--checkpoint", str(run / "checkpoint-5"),
                           "--dataset", str(data), "--heads", "1.*", "--out", str(tmp_path / "iv")],
                          env=env, cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "iv" / "intervention_items.csv")) == 4
