"""The main job's CI form, ``cpi run --quick``, on the real SmolLM2-135M-Instruct: the theory figures and
both conditions of the controlled experiment, every table and figure complete."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi.cli import main
from experiments.main_job import MainConfig


@pytest.mark.real
@pytest.mark.slow
def test_quick_main_job_on_smollm2(real_smollm2, tmp_path, capsys):
    cfg = MainConfig.quick().experiment
    out = tmp_path / "quick"
    code = main(["run", "--quick", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "closed-book known rate, CF_World_Facts" in text
    assert text.count("] verdict (") == 2 * 3 and "[rho_mid]" in text and "[rho_1]" in text  # 3 metrics each
    assert "verdict error rates at this design (1 seeds x 12 items x 3 checkpoints" in text
    assert "rho_1 - rho_mid, M_C = p_ctx / (p_ctx + p_mem), step 4:" in text and "paired on 12" in text
    steps = [0, 2, 4]
    for name, rho in (("rho_mid", 0.5), ("rho_1", 1.0)):
        run = out / name
        rates = pd.read_csv(run / "rates.csv")
        assert set(rates["dataset"]) == {"CF_World_Facts"} and rates["known_rate"].between(0, 1).all()
        assert int(rates.loc[rates["category"] == "ALL", "n"].iloc[0]) == cfg.knowledge.max_items
        counts = pd.read_csv(run / "counts.csv").iloc[0]
        assert counts["C"] + counts["CS"] == cfg.mixture.n_examples and counts["evaluated"] == cfg.evaluate.max_items
        assert (counts["CS"] == 0) == (rho == 1.0)  # the control has no non-context-critical records
        items = pd.read_csv(run / "items.csv")
        assert sorted(items["step"].unique()) == steps
        assert items.groupby("step").size().tolist() == [cfg.evaluate.max_items] * 3
        assert items["cf_correct"].notna().all() and items["margin"].notna().all() and items["m_c"].between(0, 1).all()
        probe = pd.read_csv(run / "probe_steps.csv")
        assert sorted(probe["step"].unique()) == steps and probe["attn_context"].between(0, 1).all()
        verdict = json.loads((run / "verdict.json").read_text())
        verdict = verdict[verdict["primary"]]
        assert verdict["metric"] == "m_c" and verdict["steps"] == steps and verdict["n_units"] == cfg.evaluate.max_items
        assert json.loads((run / "controlled_config.json").read_text())["config"]["mixture"]["rho"] == rho
    assert set(pd.read_csv(out / "verdicts.csv")["condition"]) == {"rho_mid", "rho_1"}
    figures = out / "figures"
    for name in ("theory_trajectory", "controlled_rho_mid_trajectory", "controlled_rho_1_trajectory",
                 "controlled_rho_mid_theory_overlay", "controlled_sweep"):
        assert (figures / f"{name}.png").stat().st_size > 1000, name
