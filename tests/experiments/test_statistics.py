"""The controlled experiment's statistics: known answers, the cross-fitted peak, error rates, paired comparisons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cpi.errors import CpiError
from experiments.controlled.statistics import (
    VERDICTS,
    Units,
    add_metrics,
    comparison_table,
    cross_fit_peaks,
    error_rate_line,
    error_rates,
    hierarchical_bootstrap,
    inversion_statistic,
    item_half,
    paired_difference,
    permuted_plateau_rate,
    seed_t_test,
    simulate_units,
    units,
    verdict_line,
    verdict_rate,
)


def items_from(traj_by_seed: dict[int, list[float]], n_items: int = 60, seed: int = 0,
               metric: str = "cf_correct") -> pd.DataFrame:
    """Per-item 0/1 scores whose mean at each step is exactly the given trajectory."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, traj in traj_by_seed.items():
        for step, p in enumerate(traj):
            ones = set(rng.permutation(n_items)[: round(p * n_items)].tolist())
            rows += [{"seed": s, "item_id": f"i{i}", "step": 10 * step, metric: float(i in ones)}
                     for i in range(n_items)]
    return pd.DataFrame(rows)


def test_add_metrics_gives_m_c_and_neither():
    t = add_metrics(pd.DataFrame({"margin": [0.0, 2.0, -800.0, 800.0], "outcome": ["context", "neither", "both",
                                                                                  "neither"]}))
    np.testing.assert_allclose(t["m_c"], [0.5, 1 / (1 + math.exp(-2)), 0.0, 1.0], atol=1e-12)
    assert list(t["neither"]) == [0.0, 1.0, 0.0, 1.0]


def test_units_refuses_gaps_and_missing_metric():
    items = items_from({0: [0.1, 0.5, 0.2]})
    u = units(items, "cf_correct")
    assert u.x.shape == (60, 3) and u.steps == (0, 10, 20) and set(u.half) == {0, 1}
    assert u.half.tolist() == [item_half(i) for i in u.item_ids]
    with pytest.raises(CpiError, match="every step"):
        units(items.iloc[1:], "cf_correct")
    with pytest.raises(CpiError, match="no column 'm_c'"):
        units(items, "m_c")


def test_hierarchical_bootstrap_puts_seed_variation_inside_the_interval():
    # every item of a seed has the seed's value: items alone show no spread, seeds do
    values = np.repeat([0.2, 0.5, 0.8], 20)
    seeds = np.repeat([0, 1, 2], 20)
    boot = hierarchical_bootstrap(values, seeds, n_boot=2000, rng=0)
    assert boot.std() > 0.1 and boot.min() == pytest.approx(0.2) and boot.max() == pytest.approx(0.8)
    one = hierarchical_bootstrap(values[:20], seeds[:20], n_boot=200, rng=0)
    assert np.allclose(one, 0.2)  # one seed: items only
    # unequal item counts: a replicate is the mean over every drawn item (seeds drawn {0,0}: 0, {1,1}: 1,
    # {0,1}: 15 of 20 items are 1), so its expectation is 0.25 * 0 + 0.25 * 1 + 0.5 * 0.75
    uneven = hierarchical_bootstrap(np.array([0.0] * 5 + [1.0] * 15), np.array([0] * 5 + [1] * 15), 4000, 1)
    assert set(np.round(uneven, 6)) == {0.0, 0.75, 1.0} and abs(uneven.mean() - 0.625) < 0.03


def test_seed_t_test_known_answer():
    values = np.array([1.0, 3.0, 2.0, 4.0, 3.0, 5.0])  # seed means 2, 3, 4
    t = seed_t_test(values, np.array([0, 0, 1, 1, 2, 2]))
    assert t["t"] == pytest.approx(3 / (1 / math.sqrt(3)))
    tt = 3 * math.sqrt(3)  # Student t with 2 degrees of freedom: sf(t) = (1 - t / sqrt(t^2 + 2)) / 2
    assert t["p_greater"] == pytest.approx((1 - tt / math.sqrt(tt * tt + 2)) / 2) and t["n_positive"] == 3
    assert seed_t_test(np.array([1.0, 2.0]), np.array([0, 0]))["p_greater"] == 1.0  # one seed: no test


def test_the_peak_of_a_unit_is_never_chosen_on_its_own_data():
    # each unit spikes at its own interior step; the cross-fitted peak must follow the *other* data
    ids = [f"item{i}" for i in range(8)]
    half = np.array([item_half(i) for i in ids * 2])
    seed = np.repeat([0, 1], 8)
    x = np.zeros((16, 5))
    x[(seed == 0) & (half == 0), 1] = 1.0
    x[(seed == 1) & (half == 1), 3] = 1.0  # what seed 0, half 0 should use
    x[(seed == 0) & (half == 1), 2] = 1.0  # what seed 1, half 0 should use
    u = Units(x=x, seed=seed, half=half, steps=tuple(range(5)), seeds=(0, 1), item_ids=tuple(ids * 2))
    peaks = cross_fit_peaks(u)
    assert set(peaks[(seed == 0) & (half == 0)]) == {3} and set(peaks[(seed == 1) & (half == 0)]) == {2}
    assert set(peaks[(seed == 1) & (half == 1)]) == {1}  # from seed 0, half 0


def test_statistic_finds_a_clear_rise_then_fall():
    stat = inversion_statistic(items_from({0: [0.1, 0.6, 0.2], 1: [0.1, 0.5, 0.2], 2: [0.2, 0.6, 0.1]}),
                               metric="cf_correct", n_boot=500)
    assert stat["verdict"] == "rise then fall" and stat["peak_step"] == 10
    assert stat["rise"] == pytest.approx(np.mean([0.5, 0.4, 0.4]), abs=1e-9)  # 3 points: the peak is step 10
    assert stat["fall"] == pytest.approx(np.mean([0.4, 0.3, 0.5]), abs=1e-9)
    assert 0 < stat["fall_lo"] < stat["fall"] < stat["fall_hi"] and stat["fall_p"] < 0.025
    assert stat["n_units"] == 180 and stat["n_seeds"] == 3
    line = verdict_line(stat)
    assert "rise then fall" in line and "3 seeds x 60 items" in line and "+40.0%" in line


def test_statistic_verdicts_for_other_shapes():
    kw = {"metric": "cf_correct", "n_boot": 500}
    flat = inversion_statistic(items_from({0: [0.3, 0.35, 0.3, 0.3], 1: [0.3, 0.3, 0.3, 0.35]}, n_items=20), **kw)
    assert flat["verdict"] == "no significant change"
    rising = inversion_statistic(items_from({0: [0.1, 0.5, 0.8], 1: [0.1, 0.6, 0.8]}), **kw)
    assert rising["verdict"].startswith("still rising") and rising["net"] == pytest.approx(0.7)
    plateau = inversion_statistic(items_from({0: [0.1, 0.6, 0.6], 1: [0.1, 0.7, 0.7], 2: [0.1, 0.6, 0.65]}), **kw)
    assert plateau["verdict"] == "rise, no significant fall"
    # two seeds: a fall of 40 and 50 points has an interval above 0, but the seed-level t-test (1 degree
    # of freedom) cannot call it; the verdict needs both
    two_seeds = inversion_statistic(items_from({0: [0.1, 0.6, 0.2], 1: [0.1, 0.7, 0.2]}), **kw)
    assert two_seeds["fall_lo"] > 0 and two_seeds["fall_p"] > 0.025
    assert two_seeds["verdict"] == "rise, no significant fall"
    falling = inversion_statistic(items_from({0: [0.8, 0.5, 0.1], 1: [0.8, 0.4, 0.2]}), **kw)
    assert falling["verdict"] == "fall (no significant rise)" and falling["net_hi"] < 0
    two = inversion_statistic(items_from({0: [0.1, 0.5]}), **kw)
    assert two["verdict"] == VERDICTS[-2] and "not testable" in verdict_line(two)
    lonely = items_from({0: [0.1, 0.5, 0.2]}, n_items=60)
    lonely = lonely[lonely["item_id"].map(item_half) == 0]  # one seed, one half: no other items
    assert inversion_statistic(lonely, **kw)["verdict"] == VERDICTS[-1]
    one_seed = inversion_statistic(items_from({0: [0.1, 0.9, 0.2]}), **kw)
    assert one_seed["verdict"] == "rise then fall" and one_seed["fall_p"] is None


def test_a_fall_in_one_seed_only_is_not_significant():
    # seed-level test: one of three seeds falls hard, the others do not
    stat = inversion_statistic(items_from({0: [0.1, 0.9, 0.3], 1: [0.1, 0.9, 0.9], 2: [0.1, 0.9, 0.9]}),
                               metric="cf_correct", n_boot=500)
    assert stat["fall"] > 0.15 and stat["verdict"] != "rise then fall" and stat["fall_p"] > 0.025


def test_simulated_plateau_has_the_stated_shape():
    u = simulate_units(20, 500, 5, rng=1)
    means = u.x.mean(axis=0)
    assert means[0] == pytest.approx(0.22, abs=0.02) and np.allclose(means[1:], 0.9, atol=0.02)
    assert (u.x[:, 3] != u.x[:, 2]).mean() == pytest.approx(0.1, abs=0.015)
    fallen = simulate_units(20, 500, 5, fall=0.2, rng=2).x.mean(axis=0)
    assert fallen[2] == pytest.approx(0.9, abs=0.02) and fallen[4] == pytest.approx(0.7, abs=0.02)


@pytest.mark.parametrize("n_steps", [4, 7])
@pytest.mark.parametrize("seed_sd", [0.0, 0.5])
def test_false_positive_rate_on_flat_plateaus_is_at_most_5_percent(n_steps, seed_sd):
    r = verdict_rate(3, 12, n_steps, seed_sd=seed_sd, n_sim=150, n_boot=300, seed=3)
    assert r["rate"] <= 0.05 and r["n_sim"] == 150


def test_false_positive_rate_on_flat_gaussian_plateaus():
    # a continuous metric (a margin in units of its item-level sd) with seed x checkpoint shifts
    r = verdict_rate(3, 12, 4, seed_sd=0.3, binary=False, n_sim=150, n_boot=300, seed=3)
    assert r["rate"] <= 0.05
    assert verdict_rate(6, 40, 4, fall=0.3, binary=False, n_sim=60, n_boot=300, seed=3)["rate"] > 0.8


def test_power_grows_with_the_fall_and_the_design():
    small = verdict_rate(3, 12, 4, fall=0.1, n_sim=100, n_boot=300, seed=4)
    big = verdict_rate(6, 40, 4, fall=0.2, n_sim=100, n_boot=300, seed=4)
    assert small["rate"] < 0.5 < 0.8 < big["rate"]


def test_permuted_real_plateau_rate():
    rng = np.random.default_rng(0)
    u = simulate_units(3, 16, 5, rng=rng)
    items = pd.DataFrame([{"seed": int(u.seed[i]), "item_id": u.item_ids[i], "step": t, "m_c": u.x[i, t]}
                          for i in range(len(u.x)) for t in range(5)])
    r = permuted_plateau_rate(items, "m_c", n_perm=60, n_boot=200)
    assert r["rate"] <= 0.1 and r["n_sim"] == 60
    with pytest.raises(CpiError, match="fewer than 2 to permute"):
        permuted_plateau_rate(items[items["step"] < 2], "m_c")


def test_error_rates_line():
    rates = error_rates(3, 12, 4, n_sim=30)
    assert set(rates) == {"fpr", "fpr_seed_noise", "power_10", "power_20"}
    line = error_rate_line(rates)
    assert "3 seeds x 12 items x 4 checkpoints" in line and "power for a 10-point fall" in line
    assert error_rates(3, 12, 2) == {} and "not testable" in error_rate_line({})


def _pair_items(shift: float, item_effects: np.ndarray, rng: np.random.Generator, seeds=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "item_id": f"i{i}", "step": step,
                          "margin": float(e + (shift if step else 0.0) + rng.normal(0, 0.3))}
                         for s in seeds for i, e in enumerate(item_effects) for step in (0, 8)])


def test_paired_difference_uses_shared_items():
    rng = np.random.default_rng(0)
    effects = rng.normal(0, 3, 30)  # large item effects shared by both conditions
    a, b = _pair_items(0.0, effects, rng), _pair_items(0.5, effects, rng)
    d = paired_difference(a, b, metric="margin")
    assert d["paired"] and d["n_pairs"] == 90 and d["n_unpaired"] == 0 and d["step"] == 8
    assert 0 < d["lo"] < 0.5 < d["hi"] < 1.0 and d["p_greater"] < 0.05
    assert d["diff"] == pytest.approx(d["mean_b"] - d["mean_a"])
    # the same data unpaired (no shared item ids): an interval far wider, across 0
    u = paired_difference(a, b.assign(item_id=b["item_id"] + "x"), metric="margin")
    assert not u["paired"] and u["lo"] < 0 < u["hi"] and (u["hi"] - u["lo"]) > 3 * (d["hi"] - d["lo"])
    same = paired_difference(a, _pair_items(0.0, effects, rng), metric="margin", step=0)
    assert same["lo"] < 0 < same["hi"] and same["step"] == 0


def test_comparison_table_rows_per_pair_metric_and_step():
    rng = np.random.default_rng(1)
    effects = rng.normal(0, 1, 20)
    items = {name: add_metrics(_pair_items(shift, effects, rng)) for name, shift in
             (("ctl", 1.0), ("mix", 0.0))}
    t = comparison_table(items, [("mix", "ctl"), ("mix", "absent")], n_boot=300)
    assert set(t["comparison"]) == {"ctl - mix"} and set(t["metric"]) == {"m_c", "margin"}
    assert len(t) == 2 * 2 and t.loc[t["last"], "step"].eq(8).all()
    last = t[(t["metric"] == "margin") & t["last"]].iloc[0]
    assert last["lo"] > 0.5
