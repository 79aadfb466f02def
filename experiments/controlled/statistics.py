"""The controlled experiment's statistics: the verdict, paired comparisons, and the verdict's error rates.

Everything here is numpy/pandas on the per-item table of a condition (one row per seed x held-out item x
checkpoint; columns ``seed, item_id, step`` and the metrics). The unit of evidence is a seed x item pair.

* **Metrics** (:data:`METRICS`): ``m_c`` = p_context / (p_context + p_memory), the primary, log-prob based
  reliance of one item (= sigmoid of the margin, from the summed log-probs ``fullscale.evaluate`` writes:
  ``logp_context``, ``logp_parametric``); ``margin`` = logp_context - logp_parametric (nats); ``cf_correct``
  (the generated answer contains the context answer, secondary). :func:`add_metrics` adds ``m_c`` and
  ``neither`` (the generated answer contains neither answer).
* **Hierarchical bootstrap** (:func:`hierarchical_bootstrap`): every replicate resamples seeds with
  replacement, then items within each drawn seed, so seed-to-seed variation is inside every interval.
  With several seeds a **seed-level t-test** on the seeds' means stands beside it (:func:`seed_t_test`).
* **The fall test** (:func:`inversion_statistic`) never picks the peak on the data it measures the fall
  on: items are split in two halves (by a hash of ``item_id``, fixed), and the peak used for the units of
  seed s, half h is the interior checkpoint with the highest mean over the *other* seeds' *other* half
  (with one seed: the other half of the same seed). Each unit then gives ``fall = x[peak] - x[last]`` and
  ``rise = x[peak] - x[first]``; their means are tested with the bootstrap and the seed-level test.
  "rise then fall" needs a rise (interval above 0) and a fall whose interval is above 0 *and* whose
  one-sided seed-level p is below (1 - level) / 2 (with >= 2 seeds; one seed: the interval alone).
* **Paired comparisons** (:func:`paired_difference`, :func:`comparison_table`): two conditions that
  share held-out items (same seed and item) are compared by the per-unit difference at each checkpoint.
* **Error rates** (:func:`false_positive_rate`, :func:`power`, :func:`permuted_plateau_rate`): the verdict's
  rate of "rise then fall" on simulated flat plateaus (:func:`simulate_items`) and on real plateaus whose
  checkpoint order is permuted within seed, and its power for a planted fall.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import numpy as np

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: the metrics every verdict and comparison runs on, primary first (labels for printed lines)
METRICS: dict[str, str] = {"m_c": "M_C = p_ctx / (p_ctx + p_mem)", "margin": "log-prob margin (nats)",
                           "cf_correct": "counterfactual containment"}
#: metrics that are shares (printed in %)
SHARE_METRICS = ("m_c", "cf_correct", "param_correct", "neither")

VERDICTS = ("rise then fall", "still rising at the last checkpoint (no interior peak)", "rise, no significant fall",
            "fall (no significant rise)", "no significant change", "not testable (fewer than 3 checkpoints)",
            "not testable (no other items to choose the peak on)")
#: the verdicts that report a significant fall (the question a fall test answers, whatever the rise)
FALL_VERDICTS = ("rise then fall", "fall (no significant rise)")


def add_metrics(items: "pd.DataFrame") -> "pd.DataFrame":
    """``items`` with ``m_c`` (sigmoid of ``margin`` = p_ctx / (p_ctx + p_mem)) and ``neither`` (the
    generated answer has neither answer: ``outcome == "neither"``) added where their inputs exist."""
    out = items.copy()
    if "margin" in out.columns:
        m = out["margin"].to_numpy(dtype=float)
        out["m_c"] = 0.5 * (1.0 + np.tanh(0.5 * m))  # sigmoid, stable for large |m|
    if "outcome" in out.columns:
        out["neither"] = (out["outcome"].astype(str) == "neither").astype(float)
    return out


# ---------------------------------------------------------------------------------------------
# units


@dataclass(frozen=True)
class Units:
    """A condition's metric as a matrix. ``x``: [unit step] values; ``seed``: [unit] seed index 0..k-1;
    ``half``: [unit] 0/1 item half; ``steps``: the checkpoints; ``seeds``, ``item_ids``: labels."""

    x: np.ndarray
    seed: np.ndarray
    half: np.ndarray
    steps: tuple[int, ...]
    seeds: tuple[Any, ...]
    item_ids: tuple[str, ...]

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def item_half(item_id: str) -> int:
    """0 or 1: a fixed split of items into halves (the first byte of SHA-256 of the id, parity)."""
    return hashlib.sha256(str(item_id).encode()).digest()[0] & 1


def units(items: "pd.DataFrame", metric: str) -> Units:
    """The [unit step] matrix of ``metric``; every seed x item must be scored at every step."""
    if metric not in items.columns:
        raise CpiError(f"items table: no column {metric!r} (columns: {', '.join(map(str, items.columns))})")
    wide = items.pivot_table(index=["seed", "item_id"], columns="step", values=metric, aggfunc="mean")
    if wide.isna().any().any():
        raise CpiError(f"items table: some seed x item is not scored at every step ({int(wide.isna().sum().sum())} gaps)")
    seeds_col = wide.index.get_level_values("seed")
    seeds = tuple(sorted(set(seeds_col)))
    ids = tuple(str(i) for i in wide.index.get_level_values("item_id"))
    return Units(x=wide.to_numpy(dtype=float), seed=np.array([seeds.index(s) for s in seeds_col]),
                 half=np.array([item_half(i) for i in ids]), steps=tuple(int(s) for s in wide.columns),
                 seeds=seeds, item_ids=ids)


# ---------------------------------------------------------------------------------------------
# intervals and tests on per-unit values


def hierarchical_bootstrap(values: np.ndarray, seed_index: np.ndarray, n_boot: int = 2000,
                           rng: "np.random.Generator | int" = 0) -> np.ndarray:
    """``n_boot`` replicates of the mean of ``values`` [unit]: seeds drawn with replacement, then items
    within each drawn seed (the mean over every drawn item). With one seed: items only."""
    rng = np.random.default_rng(rng)
    values = np.asarray(values, dtype=float)
    groups = [values[seed_index == s] for s in np.unique(seed_index)]
    k, sizes = len(groups), np.array([len(g) for g in groups])
    table = np.zeros((k, int(sizes.max())))
    for i, g in enumerate(groups):
        table[i, : len(g)] = g
    drawn = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), dtype=int)
    n = sizes[drawn]  # [boot draw]
    pick = (rng.random((n_boot, k, table.shape[1])) * n[:, :, None]).astype(int)
    valid = np.arange(table.shape[1])[None, None, :] < n[:, :, None]
    vals = table[drawn[:, :, None], pick]
    return (vals * valid).sum(axis=(1, 2)) / valid.sum(axis=(1, 2))


def seed_t_test(values: np.ndarray, seed_index: np.ndarray) -> dict[str, float]:
    """One-sample t-test of the seeds' mean ``values`` against 0 (k - 1 degrees of freedom):
    ``t``, ``p_greater`` (one-sided, mean > 0), ``p_less``, ``n_positive`` (seeds with a mean > 0).
    With one seed, or seeds with identical means, the p-values are 1 / 0 by sign (no spread to test)."""
    from scipy import stats

    means = np.array([np.mean(values[seed_index == s]) for s in np.unique(seed_index)])
    out = {"n_seeds": len(means), "n_positive": int((means > 0).sum()), "seed_mean": float(means.mean())}
    sd = means.std(ddof=1) if len(means) > 1 else 0.0
    if len(means) < 2 or sd == 0:
        out.update(t=math.inf * np.sign(means.mean()) if means.mean() else 0.0,
                   p_greater=0.0 if len(means) > 1 and means.mean() > 0 else 1.0,
                   p_less=0.0 if len(means) > 1 and means.mean() < 0 else 1.0)
        return out
    t = float(means.mean() / (sd / math.sqrt(len(means))))
    out.update(t=t, p_greater=float(stats.t.sf(t, len(means) - 1)), p_less=float(stats.t.cdf(t, len(means) - 1)))
    return out


def interval(values: np.ndarray, seed_index: np.ndarray, n_boot: int, rng: Any, level: float) -> tuple[float, float]:
    """The ``level`` percentile interval of :func:`hierarchical_bootstrap`."""
    boot = hierarchical_bootstrap(values, seed_index, n_boot, rng)
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------
# the verdict


def cross_fit_peaks(u: Units) -> Optional[np.ndarray]:
    """[unit] index of the peak checkpoint used for each unit: the interior checkpoint with the highest
    mean over the units of the *other* seeds in the *other* item half; when there are none, the other
    seeds' units, then the same seed's other half. Never the unit's own seed x half. None when some
    unit has no such data (one seed whose items all fall in one half)."""
    peaks = np.empty(len(u.x), dtype=int)
    interior = u.x[:, 1:-1]
    for s in range(u.n_seeds):
        for h in (0, 1):
            mine = (u.seed == s) & (u.half == h)
            if not mine.any():
                continue
            for other in ((u.seed != s) & (u.half != h), u.seed != s, (u.seed == s) & (u.half != h)):
                if other.any():
                    break
            else:
                return None
            peaks[mine] = 1 + int(np.argmax(interior[other].mean(axis=0)))
    return peaks


def inversion_statistic(items: "pd.DataFrame", n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                        metric: str = "m_c") -> dict[str, Any]:
    """Rise (peak - first) and fall (peak - last) of ``metric`` with the peak cross-fitted
    (:func:`cross_fit_peaks`), hierarchical-bootstrap intervals and seed-level tests; the verdict.

    Returned keys: ``metric, n_units, n_seeds, n_steps, steps, level, n_boot, trajectory`` (mean per step),
    then ``peak_step`` (the most used cross-fitted peak), ``start, peak, final`` (means at the first step,
    that peak, the last step), ``rise, rise_lo, rise_hi, fall, fall_lo, fall_hi, net, net_lo, net_hi``,
    ``fall_p`` / ``rise_p`` (one-sided seed-level p, None with one seed), ``verdict``.
    """
    u = units(items, metric)
    out: dict[str, Any] = {"metric": metric, "n_units": len(u.x), "n_seeds": u.n_seeds, "n_steps": len(u.steps),
                           "steps": list(u.steps), "level": level, "n_boot": n_boot,
                           "trajectory": [float(v) for v in u.x.mean(axis=0)]}
    if len(u.steps) < 3:
        out.update(verdict=VERDICTS[-2])
        return out
    out.update(_verdict(u, n_boot, np.random.default_rng(seed), level))
    return out


def _verdict(u: Units, n_boot: int, rng: np.random.Generator, level: float) -> dict[str, Any]:
    rows = np.arange(len(u.x))
    peaks = cross_fit_peaks(u)
    if peaks is None:
        return {"verdict": VERDICTS[-1]}
    at_peak = u.x[rows, peaks]
    diffs = {"rise": at_peak - u.x[:, 0], "fall": at_peak - u.x[:, -1], "net": u.x[:, -1] - u.x[:, 0]}
    res: dict[str, Any] = {}
    for name, d in diffs.items():
        lo, hi = interval(d, u.seed, n_boot, rng, level)
        res.update({name: float(d.mean()), f"{name}_lo": lo, f"{name}_hi": hi})
    alpha = 1 - level
    multi = u.n_seeds > 1
    if multi:
        res["rise_p"] = seed_t_test(diffs["rise"], u.seed)["p_greater"]
        res["fall_p"] = seed_t_test(diffs["fall"], u.seed)["p_greater"]
    else:
        res["rise_p"] = res["fall_p"] = None

    rise = res["rise_lo"] > 0
    fall = res["fall_lo"] > 0 and (not multi or res["fall_p"] < alpha / 2)
    if rise and fall:
        verdict = VERDICTS[0]
    elif res["fall_hi"] < 0 and res["net_lo"] > 0:
        verdict = VERDICTS[1]
    elif rise:
        verdict = VERDICTS[2]
    elif res["net_hi"] < 0:
        verdict = VERDICTS[3]
    else:
        verdict = VERDICTS[4]
    peak = int(np.bincount(peaks).argmax())
    mean = u.x.mean(axis=0)
    res.update(peak_step=u.steps[peak], start=float(mean[0]), peak=float(mean[peak]), final=float(mean[-1]),
               verdict=verdict)
    return res


def verdict_line(stat: dict[str, Any]) -> str:
    """One printed line for :func:`inversion_statistic`'s result."""
    n = f"{stat['n_seeds']} seeds x {stat['n_units'] // max(stat['n_seeds'], 1)} items"
    name = METRICS.get(stat["metric"], stat["metric"])
    if "rise" not in stat:
        return f"verdict ({name}): {stat['verdict']} ({n})"
    f = _fmt(stat["metric"])
    pct = int(round(100 * stat["level"]))
    p = "" if stat.get("fall_p") is None else f", seed-level p(fall > 0) = {stat['fall_p']:.2f}"
    return (f"verdict ({name}): {stat['verdict']} -- {f(stat['start'])} (step {stat['steps'][0]}) -> "
            f"{f(stat['peak'])} (peak, step {stat['peak_step']}, chosen on other seeds' other items) -> "
            f"{f(stat['final'])} (step {stat['steps'][-1]}); rise {f(stat['rise'], True)} "
            f"[{f(stat['rise_lo'], True)}, {f(stat['rise_hi'], True)}], fall {f(stat['fall'], True)} "
            f"[{f(stat['fall_lo'], True)}, {f(stat['fall_hi'], True)}]{p} ({pct}% hierarchical bootstrap, {n})")


def _fmt(metric: str):
    if metric in SHARE_METRICS:
        return lambda v, sign=False: f"{100 * v:+.1f}%" if sign else f"{100 * v:.1f}%"
    return lambda v, sign=False: f"{v:+.2f}" if sign else f"{v:.2f}"


# ---------------------------------------------------------------------------------------------
# paired comparisons


def paired_difference(items_a: "pd.DataFrame", items_b: "pd.DataFrame", metric: str = "m_c",
                      step: Optional[int] = None, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict[str, Any]:
    """``metric`` of condition b minus condition a at ``step`` (default: the last step of a), paired on
    the seed x item units both scored there; hierarchical-bootstrap interval over those units and the
    seed-level t-test. Units in only one condition are counted (``n_unpaired``), not used; with no
    shared unit the difference is of the two means, unpaired (``paired`` False), the bootstrap
    independent per condition."""
    import pandas as pd

    step = int(items_a["step"].max()) if step is None else int(step)
    keys = ["seed", "item_id"]
    a = items_a[items_a["step"] == step].groupby(keys, as_index=False)[metric].mean()
    b = items_b[items_b["step"] == step].groupby(keys, as_index=False)[metric].mean()
    both = pd.merge(a, b, on=keys, suffixes=("_a", "_b"))
    out: dict[str, Any] = {"metric": metric, "step": step, "mean_a": float(a[metric].mean()),
                           "mean_b": float(b[metric].mean()), "n_a": len(a), "n_b": len(b), "level": level}
    rng = np.random.default_rng(seed)
    if len(both):
        d = both[f"{metric}_b"].to_numpy(float) - both[f"{metric}_a"].to_numpy(float)
        sidx = np.unique(both["seed"].to_numpy(), return_inverse=True)[1]
        lo, hi = interval(d, sidx, n_boot, rng, level)
        t = seed_t_test(d, sidx)
        out.update(paired=True, n_pairs=len(both), n_unpaired=len(a) + len(b) - 2 * len(both), diff=float(d.mean()),
                   lo=lo, hi=hi, p_greater=t["p_greater"] if t["n_seeds"] > 1 else None,
                   p_less=t["p_less"] if t["n_seeds"] > 1 else None)
        return out
    ba = hierarchical_bootstrap(a[metric].to_numpy(float), np.unique(a["seed"], return_inverse=True)[1], n_boot, rng)
    bb = hierarchical_bootstrap(b[metric].to_numpy(float), np.unique(b["seed"], return_inverse=True)[1], n_boot, rng)
    lo, hi = np.quantile(bb - ba, [(1 - level) / 2, (1 + level) / 2])
    out.update(paired=False, n_pairs=0, n_unpaired=len(a) + len(b), diff=out["mean_b"] - out["mean_a"],
               lo=float(lo), hi=float(hi), p_greater=None, p_less=None)
    return out


def comparison_table(items: dict[str, "pd.DataFrame"], pairs: Sequence[tuple[str, str]],
                     metrics: Iterable[str] = tuple(METRICS), n_boot: int = 2000) -> "pd.DataFrame":
    """One row per pair ``(a, b)`` (the comparison ``b - a``) x metric x checkpoint shared by both:
    columns ``comparison, a, b, metric, step, last`` (the last shared step) and :func:`paired_difference`'s.
    Pairs whose conditions were not run are left out; a metric missing from a table is skipped."""
    import pandas as pd

    rows = []
    for a, b in pairs:
        if a not in items or b not in items:
            continue
        steps = sorted(set(items[a]["step"].astype(int)) & set(items[b]["step"].astype(int)))
        for metric in metrics:
            if metric not in items[a].columns or metric not in items[b].columns:
                continue
            for step in steps:
                d = paired_difference(items[a], items[b], metric=metric, step=step, n_boot=n_boot)
                rows.append({"comparison": f"{b} - {a}", "a": a, "b": b, **d, "last": step == steps[-1]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# the verdict's error rates


def _latent_correlation(level: float, flip: float) -> float:
    """The AR(1) correlation of a unit's latent Gaussian between checkpoints that makes a binary unit at
    share ``level`` change value between two checkpoints with probability ``flip``."""
    from scipy import optimize, stats

    a = stats.norm.ppf(level)
    if flip <= 0:
        return 1.0
    if flip >= 2 * level * (1 - level):
        return 0.0

    def share(c: float) -> float:
        both = stats.multivariate_normal(mean=[0, 0], cov=[[1, c], [c, 1]]).cdf([a, a])
        return 2 * (level - both) - flip

    return float(optimize.brentq(share, 0.0, 0.999999))


def simulate_units(n_seeds: int, n_items: int, n_steps: int, *, level: float = 0.9, start: float = 0.22,
                   flip: float = 0.1, seed_sd: float = 0.0, fall: float = 0.0, binary: bool = True,
                   rng: "np.random.Generator | int" = 0, _corr: Optional[float] = None) -> Units:
    """A simulated condition: step 0 at ``start``, a plateau at ``level`` from step 1, and (``fall`` > 0)
    a linear fall by ``fall`` from the middle interior checkpoint to the last.

    Binary units (``binary``): a unit is 1 when its latent Gaussian (AR(1) over checkpoints, correlation set
    so that a share ``flip`` of units change value between two plateau checkpoints) is below the
    quantile of the seed x checkpoint's share, whose logit is shifted by N(0, ``seed_sd``) per seed and
    checkpoint (seed-level noise). Gaussian units (``binary`` False): level + the seed shift + the latent
    (sd 1, same correlation), e.g. a margin in units of its item-level sd.
    """
    from scipy import stats

    rng = np.random.default_rng(rng)
    corr = _latent_correlation(level, flip) if _corr is None else _corr
    mid = max(1, (n_steps - 1) // 2)
    target = np.array([start] + [level - fall * max(0, t - mid) / max(1, n_steps - 1 - mid)
                                 for t in range(1, n_steps)])
    n = n_seeds * n_items
    z = np.empty((n, n_steps))
    z[:, 0] = rng.standard_normal(n)
    z[:, 1] = rng.standard_normal(n)
    for t in range(2, n_steps):
        z[:, t] = corr * z[:, t - 1] + math.sqrt(1 - corr ** 2) * rng.standard_normal(n)
    shift = rng.normal(0.0, seed_sd, size=(n_seeds, n_steps)) if seed_sd > 0 else np.zeros((n_seeds, n_steps))
    shift[:, 0] = 0.0
    seed = np.repeat(np.arange(n_seeds), n_items)
    if binary:
        logit = np.log(target / (1 - target))[None, :] + shift
        x = (z < stats.norm.ppf(1 / (1 + np.exp(-logit)))[seed]).astype(float)
    else:
        x = target[None, :] + shift[seed] + z
    ids = tuple(f"i{i}" for i in range(n_items)) * n_seeds
    return Units(x=x, seed=seed, half=np.array([item_half(i) for i in ids]), steps=tuple(range(n_steps)),
                 seeds=tuple(range(n_seeds)), item_ids=ids)


def _rate(hits: int, n: int) -> dict[str, float]:
    """Share with a 95 % Wilson interval."""
    p, z = hits / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"rate": p, "lo": max(0.0, centre - half), "hi": min(1.0, centre + half), "n_sim": n}


def verdict_rate(n_seeds: int, n_items: int, n_steps: int, *, fall: float = 0.0, n_sim: int = 300,
                 n_boot: int = 400, level: float = 0.95, seed: int = 0, **simulation: Any) -> dict[str, float]:
    """Share of ``n_sim`` simulated conditions (:func:`simulate_units`) whose verdict is "rise then fall":
    the false-positive rate when ``fall`` = 0, the power otherwise (with a 95 % Wilson interval)."""
    rng = np.random.default_rng(seed)
    corr = _latent_correlation(simulation.get("level", 0.9), simulation.get("flip", 0.1))
    hits = 0
    for _ in range(n_sim):
        u = simulate_units(n_seeds, n_items, n_steps, fall=fall, rng=rng, _corr=corr, **simulation)
        hits += _verdict(u, n_boot, rng, level)["verdict"] == VERDICTS[0]
    return {"n_seeds": n_seeds, "n_items": n_items, "n_steps": n_steps, "fall": fall, **_rate(hits, n_sim)}


def permuted_plateau_rate(items: "pd.DataFrame", metric: str = "m_c", plateau_from: int = 1, n_perm: int = 200,
                          n_boot: int = 400, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Share of "rise then fall" verdicts on the real ``items`` with the order of the checkpoints from
    index ``plateau_from`` on (after the rise) permuted independently within each seed: a real plateau's
    noise with any true fall broken up (the false-positive rate on real data)."""
    u = units(items, metric)
    if len(u.steps) - plateau_from < 2:
        raise CpiError(f"items table: {len(u.steps)} checkpoints leave fewer than 2 to permute after index {plateau_from}")
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        x = u.x.copy()
        for s in range(u.n_seeds):
            rows = u.seed == s
            order = plateau_from + rng.permutation(len(u.steps) - plateau_from)
            x[np.ix_(rows, np.arange(plateau_from, len(u.steps)))] = u.x[rows][:, order]
        perm = Units(x=x, seed=u.seed, half=u.half, steps=u.steps, seeds=u.seeds, item_ids=u.item_ids)
        hits += _verdict(perm, n_boot, rng, level)["verdict"] == VERDICTS[0]
    return {"metric": metric, **_rate(hits, n_perm)}


def error_rates(n_seeds: int, n_items: int, n_steps: int, n_sim: int = 200, seed: int = 0) -> dict[str, dict]:
    """The verdict's error rates at one design (binary units, plateau 90 %, 10 % of items flipping):
    ``fpr`` (flat), ``fpr_seed_noise`` (flat, seed x checkpoint logit sd 0.3), ``power_10`` and
    ``power_20`` (a fall of 10 / 20 points after the middle checkpoint)."""
    if n_steps < 3:
        return {}
    run = lambda **kw: verdict_rate(n_seeds, n_items, n_steps, n_sim=n_sim, seed=seed, **kw)  # noqa: E731
    return {"fpr": run(), "fpr_seed_noise": run(seed_sd=0.3), "power_10": run(fall=0.10), "power_20": run(fall=0.20)}


def error_rate_line(rates: dict[str, dict]) -> str:
    """One printed line for :func:`error_rates`."""
    if "fpr" not in rates:
        return "verdict error rates: not testable (fewer than 3 checkpoints)"
    r = rates["fpr"]
    f = lambda key: f"{rates[key]['rate']:.0%} [{rates[key]['lo']:.0%}, {rates[key]['hi']:.0%}]"  # noqa: E731
    return (f"verdict error rates at this design ({r['n_seeds']} seeds x {r['n_items']} items x {r['n_steps']} "
            f"checkpoints; simulated 90% plateau, 10% of items flipping, {r['n_sim']} runs each): false 'rise then "
            f"fall' {f('fpr')}, with seed-level noise {f('fpr_seed_noise')}; power for a 10-point fall "
            f"{f('power_10')}, 20-point {f('power_20')}")


__all__ = ["METRICS", "SHARE_METRICS", "Units", "VERDICTS", "add_metrics", "comparison_table", "cross_fit_peaks",
           "error_rate_line", "error_rates", "hierarchical_bootstrap", "interval", "inversion_statistic", "item_half",
           "paired_difference", "permuted_plateau_rate", "seed_t_test", "simulate_units", "units", "verdict_line",
           "verdict_rate"]
