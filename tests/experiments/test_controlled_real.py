"""``cpi controlled run --quick`` on the real SmolLM2-135M-Instruct: every table and figure complete."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi.cli import main
from experiments.controlled.experiment import ControlledConfig


@pytest.mark.real
@pytest.mark.slow
def test_quick_run_on_smollm2(real_smollm2, tmp_path, capsys):
    cfg = ControlledConfig.quick()
    out = tmp_path / "quick"
    code = main(["controlled", "run", "--quick", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "verdict:" in text and "closed-book known rate, CF_World_Facts" in text
    rates = pd.read_csv(out / "rates.csv")
    assert set(rates["dataset"]) == {"CF_World_Facts"} and rates["known_rate"].between(0, 1).all()
    assert int(rates.loc[rates["category"] == "ALL", "n"].iloc[0]) == cfg.knowledge.max_items
    counts = pd.read_csv(out / "counts.csv").iloc[0]
    assert counts["C"] + counts["CS"] == cfg.mixture.n_examples and counts["evaluated"] == cfg.evaluate.max_items
    items = pd.read_csv(out / "items.csv")
    steps = [0, 2, 4]
    assert sorted(items["step"].unique()) == steps
    assert items.groupby("step").size().tolist() == [cfg.evaluate.max_items] * 3
    assert items["cf_correct"].notna().all() and items["margin"].notna().all()
    probe = pd.read_csv(out / "probe_steps.csv")
    assert sorted(probe["step"].unique()) == steps and probe["attn_context"].between(0, 1).all()
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["steps"] == steps and verdict["n_units"] == cfg.evaluate.max_items
    for name in ("controlled_trajectory", "controlled_theory_overlay"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
