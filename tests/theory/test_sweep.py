"""Run summaries: regimes (incl. the reverse regime where Lemma 6 fails), seed intervals, grids."""

import numpy as np
import pandas as pd
import pytest

from theory.config import SimConfig
from theory.simulator import simulate
from theory.sweep import (REVERSE_BASE, filtering_configs, optimizer_configs, overlap_configs, regime,
                          reverse_regime_configs, seed_intervals, simulate_summary, summarize)


def test_reverse_regime_dips_then_rises_above_its_start():
    """Lemma 6 fails (|m_C| < |m_C+S|): M_C falls first, then ends above its start (no inversion)."""
    s = summarize(simulate(SimConfig(**REVERSE_BASE), show_progress=False)).iloc[0]
    assert s.start == pytest.approx(0.19147063047363305, rel=1e-12)
    assert s.first_move < 0 and s.dip > 0.02 and s.final > s.start + 0.04
    assert s.regime == "dip, then rise above start" and s.inversion < 1e-3
    d = summarize(simulate(SimConfig(), show_progress=False)).iloc[0]
    assert d.regime == "rise, then fall" and d.first_move > 0 and d.dip == 0


def test_regime_names():
    assert regime(0, 0.5, 0.3, 0.2) == "rise, then fall"
    assert regime(0, 0.5, 0, 0.5) == "rise only"
    assert regime(0.1, 0.05, 0, 0.05) == "dip, then rise above start"
    assert regime(0.1, 0.05, 0.2, -0.15) == "dip, rise, fall"
    assert regime(0.0, 0.0, 0.3, -0.3) == "fall only"
    assert regime(0.0, 0.0, 0.0, 0.0) == "flat"


def test_reverse_grid_has_both_regimes():
    s = summarize(simulate([c.replace(steps=150) for c in reverse_regime_configs()], show_progress=False))
    small = s[s.delta_C <= 0.1]
    assert (small.regime == "dip, then rise above start").mean() > 0.8
    assert (s[s.delta_C >= 0.2].regime == "rise, then fall").any()


def test_seed_intervals_t_interval():
    s = pd.DataFrame({"g": ["a"] * 5 + ["b"], "inversion": [1.0, 2.0, 3.0, 4.0, 5.0, 7.0]})
    iv = seed_intervals(s, ["g"], values=("inversion",)).set_index("g")
    half = 2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)
    assert iv.loc["a", "mean"] == 3.0 and iv.loc["a", "hi"] - 3.0 == pytest.approx(half, rel=1e-12)
    assert iv.loc["b", "lo"] == iv.loc["b", "hi"] == 7.0 and iv.loc["b", "n"] == 1


def test_simulate_summary_runs_deterministic_configs_once():
    cfgs = [SimConfig(steps=10), SimConfig(steps=10, optimizer="sgd", batch_size=4)]
    s = simulate_summary(cfgs, seeds=[0, 1, 2])
    assert list(s.groupby("config_id").size()) == [1, 3]
    full = summarize(simulate(cfgs[1], seeds=[0, 1, 2], show_progress=False))
    np.testing.assert_array_equal(s[s.config_id == 1]["final"].to_numpy(), full["final"].to_numpy())


def test_practice_grids_are_valid_and_batch_by_update_rule():
    opt = optimizer_configs()
    assert len(opt) == 6 * 6 * 3 and len({c.shape_key for c in opt}) == 2  # one batch per update rule (plain, adam)
    assert len(filtering_configs()) == 2 * (1 + 2 * 8)
    ov = overlap_configs()
    assert {c.overlap for c in ov} == {0.0, 0.25, 0.5, 0.75} and {c.n_distractors for c in ov} == {0, 2}


def test_adam_shrinks_the_inversion_and_sgd_keeps_it():
    """The finding the docs state, pinned: at n_CS = n_C, GD/SGD fall by > 0.3, full-batch Adam by < 0.01."""
    base = SimConfig(n_C=16, n_CS=16, K_S=52, K_A=64, steps=300)
    cfgs = [base, base.replace(optimizer="sgd", batch_size=8), base.replace(optimizer="adam", lr=0.03)]
    s = simulate_summary(cfgs, seeds=[0, 1])
    inv = s.groupby("config_id")["inversion"].mean()
    assert inv[0] > 0.3 and inv[1] > 0.3 and inv[2] < 0.01
