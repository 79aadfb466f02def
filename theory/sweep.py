"""Sweeps over configurations and per-run summaries of the inversion.

:func:`default_sweep_configs` is the grid behind the phase diagram
(n_CS/n_C x delta_M/delta_C x eta x K_A, 240 configurations);
:func:`summarize` turns a trajectory table into one row per (config, seed)
with the inversion magnitude (peak M_C - final M_C), the time to peak and the
run's regime; :func:`seed_intervals` aggregates it over seeds with 95%
t-intervals; :func:`comparison_configs` is the set of runs compared in the
trajectory figures (control, QK-only vs full, S points, augmentation).

Grids of the closer-to-practice figures: :func:`optimizer_configs` (GD, SGD,
Adam, AdamW over n_CS/n_C and the learning rate), :func:`filtering_configs`
(noisy filters on heterogeneous points), :func:`overlap_configs` (overlapping
embeddings and distractors) and :func:`reverse_regime_configs` (where Lemma 6
fails).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from theory.config import SimConfig

SWEEP_RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
SWEEP_DELTA_M = (0.45, 0.6, 0.75, 0.9)
SWEEP_LR = (0.5, 1.0, 2.0, 4.0, 8.0)
SWEEP_K_A = (32, 64)
SWEEP_BASE = dict(n_C=8, n_CS=8, n_test=4)


def default_sweep_configs(
    base: SimConfig | None = None,
    ratios: Sequence[float] = SWEEP_RATIOS,
    delta_M: Sequence[float] = SWEEP_DELTA_M,
    lrs: Sequence[float] = SWEEP_LR,
    K_A: Sequence[int] = SWEEP_K_A,
) -> list[SimConfig]:
    """The phase-diagram grid: n_CS = ratio * n_C, delta_M (delta_C fixed), lr and K_A.

    K_S is fixed to the largest data size of the grid so that configurations
    differ in shape only through K_A (two batched groups by default).
    """
    base = base if base is not None else SimConfig(**SWEEP_BASE)
    n_CS = [int(round(r * base.n_C)) for r in ratios]
    K_S = base.n_C + max(n_CS) + base.n_S + base.n_aug + base.n_test
    out = []
    for ka, ncs, dm, lr in itertools.product(K_A, n_CS, delta_M, lrs):
        out.append(base.replace(K_S=K_S, K_A=ka, n_CS=ncs, delta_M=dm, lr=lr, label="sweep"))
    return out


def comparison_configs(base: SimConfig | None = None) -> dict[str, SimConfig]:
    """Named variants of ``base`` compared with it in the trajectory figures."""
    base = base if base is not None else SimConfig()
    return {
        "default (QK-only)": base.replace(label="default"),
        "control: no C+S points": base.replace(n_CS=0, K_S=base.k_s, K_A=base.k_a, label="control"),
        "full (W_KQ and W_V)": base.replace(mode="full", label="full"),
        "full, W_V lr x0.05": base.replace(mode="full", lr_V_scale=0.05, label="full_slowV"),
        "+ memorized S points": base.replace(n_S=base.n_C, relation_logit=-2.0, label="S_points"),
        "same, no S points (sigma_r > 0)": base.replace(relation_logit=-2.0, K_S=base.k_s + base.n_C,
                                                         K_A=base.k_a + base.n_C, label="S_baseline"),
        "+ counterfactual augmentation": base.replace(n_aug=base.n_C // 2, label="augmented"),
    }


REGIME_TOL = 1e-3
REGIMES = ("rise, then fall", "rise only", "dip, then rise above start", "dip, rise, fall", "fall only", "flat")
#: the regimes whose trajectory ends below its peak after rising, or below its start: a predicted fall
FALLING_REGIMES = ("rise, then fall", "dip, rise, fall", "fall only")


def regime(dip: float, rise: float, inversion: float, final_minus_start: float, tol: float = REGIME_TOL) -> str:
    """Name the shape of a reliance trajectory (changes below ``tol`` count as none).

    dip = start - min before the peak; rise = peak - start; inversion = peak - final.
    "dip, then rise above start" is the reverse regime of a failed first phase (Lemma 6).
    """
    if dip > tol:
        if inversion > tol and rise > tol:
            return "dip, rise, fall"
        return "dip, then rise above start" if final_minus_start > tol else "fall only"
    if rise > tol:
        return "rise, then fall" if inversion > tol else "rise only"
    return "fall only" if -final_minus_start > tol else "flat"


def summarize(table, metric: str = "M_C"):
    """One row per (config_id, seed): start, peak, time to peak, final, minimum after the peak.

    ``inversion`` = peak - final (how far reliance falls from its peak),
    ``rise`` = peak - start, ``recovery`` = final - min_after_peak (> 0 if
    reliance climbs back after its lowest point), ``fall_steps`` = steps from
    the peak until the fall has covered 90% of its total drop (peak - min_after_peak),
    ``peaked`` = the peak lies before the last step, ``dip`` = start - the minimum
    before the peak, ``first_move`` = M_C(1) - M_C(0), ``regime`` (:func:`regime`).
    """
    import pandas as pd

    rows = []
    cfg_cols = [c for c in table.columns if c not in _metric_and_index_columns(table)]
    for (cid, seed), g in table.groupby(["config_id", "seed"], sort=True):
        g = g.sort_values("step")
        m = g[metric].to_numpy()
        steps = g["step"].to_numpy()
        pk = int(np.nanargmax(m))
        after = m[pk:]
        mn = int(np.nanargmin(after)) + pk
        drop = m[pk] - m[mn]
        fall_steps = np.nan
        if drop > 1e-9:
            reached = np.flatnonzero(m[pk:] <= m[pk] - 0.9 * drop)
            fall_steps = float(steps[pk + reached[0]] - steps[pk])
        row = {c: g[c].iloc[0] for c in cfg_cols}
        dip = m[0] - np.nanmin(m[: pk + 1])
        row.update(
            config_id=cid,
            seed=seed,
            start=m[0],
            peak=m[pk],
            t_peak=int(steps[pk]),
            final=m[-1],
            min_after_peak=m[mn],
            t_min=int(steps[mn]),
            rise=m[pk] - m[0],
            inversion=m[pk] - m[-1],
            recovery=m[-1] - m[mn],
            fall_steps=fall_steps,
            peaked=bool(pk < len(m) - 1),
            dip=dip,
            first_move=m[1] - m[0] if len(m) > 1 else np.nan,
            regime=regime(dip, m[pk] - m[0], m[pk] - m[-1], m[-1] - m[0]),
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    if "n_CS" in out and "n_C" in out:
        out["ratio_CS_C"] = out["n_CS"] / out["n_C"]
    if "delta_M" in out and "delta_C" in out:
        out["ratio_M_C"] = out["delta_M"] / out["delta_C"]
    return out


def _metric_and_index_columns(table) -> set[str]:
    from theory.simulator import METRICS

    return set(METRICS) | {"config_id", "seed", "step"}


def eta_scan(base: SimConfig | None = None, etas: Sequence[float] | None = None):
    """Proposition 1 / Theorem 1 by simulation, for each step size eta (one batched run of 2 steps).

    Returns one row per eta: ``G0``/``G1`` = theta_C^T[-grad L(W(t))]phi(r) at
    t = 0, 1, ``GS0``/``GS1`` the theta_S projections, ``M_C0..2`` and the
    attention on the context of C / C+S points after one step.
    """
    import pandas as pd

    from theory.simulator import simulate

    base = base if base is not None else SimConfig()
    etas = np.logspace(-1, 3, 161) if etas is None else np.asarray(etas, dtype=float)
    cfgs = [base.replace(lr=float(e), steps=2, init_noise=0.0) for e in etas]
    tab = simulate(cfgs, steps=2, show_progress=False)
    rows = []
    for cid, g in tab.groupby("config_id", sort=True):
        g = g.set_index("step")
        rows.append(
            dict(
                eta=float(etas[cid]),
                G0=g.loc[0, "grad_theta_C"],
                G1=g.loc[1, "grad_theta_C"],
                GS0=g.loc[0, "grad_theta_S"],
                GS1=g.loc[1, "grad_theta_S"],
                M_C0=g.loc[0, "M_C"],
                M_C1=g.loc[1, "M_C"],
                M_C2=g.loc[2, "M_C"],
                attn_context_C1=g.loc[1, "attn_context_C"],
                attn_context_CS1=g.loc[1, "attn_context_CS"],
            )
        )
    return pd.DataFrame(rows)


def find_eta_star_sim(base: SimConfig | None = None, eta_max: float = 1e4, iters: int = 12) -> float:
    """Smallest eta with theta_C^T[-grad L(W(1))]phi(r) < 0, found with the simulator (NaN if none).

    A batched log-grid scan for the first sign change, then bisection.
    Independent of the sympy derivation (the tests compare the two).
    """
    base = base if base is not None else SimConfig()
    scan = eta_scan(base, np.logspace(-3, np.log10(eta_max), 400))
    neg = np.flatnonzero(scan["G1"].to_numpy() < 0)
    if neg.size == 0:
        return float("nan")
    i = int(neg[0])
    if i == 0:
        return float(scan["eta"].iloc[0])
    lo, hi = float(scan["eta"].iloc[i - 1]), float(scan["eta"].iloc[i])
    from theory.simulator import simulate

    for _ in range(iters):
        mids = np.linspace(lo, hi, 18)[1:-1]
        tab = simulate([base.replace(lr=float(e), steps=1, init_noise=0.0) for e in mids], steps=1, show_progress=False)
        g1 = tab[tab.step == 1].sort_values("config_id")["grad_theta_C"].to_numpy()
        j = np.flatnonzero(g1 < 0)
        if j.size == 0:
            lo = float(mids[-1])
        else:
            hi = float(mids[j[0]])
            lo = float(mids[j[0] - 1]) if j[0] > 0 else lo
        if hi - lo <= 1e-12 * hi:
            break
    return hi


#: two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (beyond: the normal 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def seed_intervals(summary, by: Sequence[str], values: Sequence[str] = ("inversion", "t_peak")):
    """Mean over seeds with a two-sided 95% t-interval, one row per group of ``by`` and value.

    Columns: ``by``..., ``value``, ``mean``, ``lo``, ``hi``, ``sd``, ``n`` (seeds).
    With n = 1 or identical seeds the interval is the mean itself.
    """
    import pandas as pd

    rows = []
    for key, g in summary.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for v in values:
            x = g[v].to_numpy(dtype=float)
            n = int(np.isfinite(x).sum())
            mean = float(np.nanmean(x)) if n else np.nan
            sd = float(np.nanstd(x, ddof=1)) if n > 1 else 0.0
            half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * sd / np.sqrt(n) if n > 1 else 0.0
            rows.append({**dict(zip(by, key)), "value": v, "mean": mean, "lo": mean - half, "hi": mean + half, "sd": sd, "n": n})
    return pd.DataFrame(rows)


#: optimizer variants of the closer-to-practice figures: name -> (SimConfig changes, learning rates)
OPTIMIZERS = {
    "GD (full batch)": (dict(optimizer="gd"), (0.5, 2.0, 8.0)),
    "SGD (batch 8)": (dict(optimizer="sgd", batch_size=8), (0.5, 2.0, 8.0)),
    "Adam (full batch)": (dict(optimizer="adam"), (0.01, 0.03, 0.1)),
    "Adam (full batch, random basis)": (dict(optimizer="adam", basis="random"), (0.01, 0.03, 0.1)),
    "AdamW (batch 8, wd 0.01)": (dict(optimizer="adamw", batch_size=8, weight_decay=0.01), (0.01, 0.03, 0.1)),
    "AdamW (batch 8, wd 0.01, random basis)": (dict(optimizer="adamw", batch_size=8, weight_decay=0.01,
                                                    basis="random"), (0.01, 0.03, 0.1)),
}
OPT_RATIOS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
PRACTICE_BASE = dict(n_C=16, n_test=4, K_S=52, K_A=64, steps=500)


def optimizer_configs(base: SimConfig | None = None, ratios: Sequence[float] = OPT_RATIOS,
                      optimizers: dict | None = None) -> list[SimConfig]:
    """Every optimizer variant x its learning rates x n_CS = ratio * n_C (label = variant name).

    K_S and K_A are fixed (52, 64 by default) so that each update rule is one batch.
    """
    base = base if base is not None else SimConfig(**PRACTICE_BASE)
    out = []
    for name, (changes, lrs) in (optimizers or OPTIMIZERS).items():
        for ratio, lr in itertools.product(ratios, lrs):
            out.append(base.replace(n_CS=int(round(ratio * base.n_C)), lr=lr, label=name, **changes))
    return out


#: heterogeneous points for the filtering figure (delta_M low enough that every C+S point stays admissible)
FILTER_BASE = dict(n_C=16, n_CS=16, n_test=4, K_S=36, K_A=64, delta_C=0.2, delta_M=0.75, delta_C_spread=0.3,
                   delta_M_spread=0.2, steps=500)
FILTER_FRACTIONS = (0.25, 0.5)
FILTER_NOISES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 20.0)


def filtering_configs(base: SimConfig | None = None, fractions: Sequence[float] = FILTER_FRACTIONS,
                      noises: Sequence[float] = FILTER_NOISES, optimizers: Sequence[str] = ("GD (full batch)",
                                                                                           "AdamW (batch 8, wd 0.01)"),
                      lr_index: int = 1) -> list[SimConfig]:
    """The unfiltered run and every (fraction, noise) filter, under each optimizer (its middle lr)."""
    base = base if base is not None else SimConfig(**FILTER_BASE)
    out = []
    for name in optimizers:
        changes, lrs = OPTIMIZERS[name]
        b = base.replace(lr=lrs[lr_index], label=name, **changes)
        out.append(b)
        out += [b.replace(filter_fraction=f, filter_noise=z) for f in fractions for z in noises]
    return out


OVERLAPS = (0.0, 0.25, 0.5, 0.75)
DISTRACTORS = (0, 2)


def overlap_configs(base: SimConfig | None = None, overlaps: Sequence[float] = OVERLAPS,
                    distractors: Sequence[int] = DISTRACTORS, ratios: Sequence[float] = (0.0, 0.5, 1.0, 2.0),
                    optimizers: Sequence[str] = ("GD (full batch)", "AdamW (batch 8, wd 0.01)"), lr_index: int = 1):
    """Overlap levels x distractor counts x n_CS/n_C under each optimizer (its middle lr)."""
    base = base if base is not None else SimConfig(**{**PRACTICE_BASE, "K_A": None})
    n_cs = [int(round(r * base.n_C)) for r in ratios]
    out = []
    for name in optimizers:
        changes, lrs = OPTIMIZERS[name]
        for k in distractors:
            # one vocabulary per distractor count: the largest the grid needs
            probe = base.replace(n_CS=max(n_cs), n_distractors=k)
            for ov, ncs in itertools.product(overlaps, n_cs):
                out.append(base.replace(n_CS=ncs, n_distractors=k, overlap=ov, K_S=probe.k_s, K_A=probe.k_a,
                                        lr=lrs[lr_index], label=name, **changes))
    return out


#: the Lemma 6 counterexample of tests/theory/test_symbolic.py: |m_C| < |m_C+S| at n_C = n_C+S
REVERSE_BASE = dict(n_C=2, n_CS=2, n_test=2, K_S=10, K_A=50, delta_C=0.097, delta_M=0.657, o_c=0.97, o_r=0.65)
REVERSE_DELTA_C = (0.07, 0.085, 0.1, 0.125, 0.15, 0.2, 0.25)
REVERSE_DELTA_M = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def reverse_regime_configs(base: SimConfig | None = None, delta_C: Sequence[float] = REVERSE_DELTA_C,
                           delta_M: Sequence[float] = REVERSE_DELTA_M) -> list[SimConfig]:
    """A delta_C x delta_M grid around the Lemma 6 counterexample (admissible cells only)."""
    base = base if base is not None else SimConfig(**REVERSE_BASE)
    return [base.replace(delta_C=dc, delta_M=dm, label="reverse grid")
            for dc, dm in itertools.product(delta_C, delta_M) if dm > 2 * dc]


def is_stochastic(cfg: SimConfig) -> bool:
    """Whether the seed changes this configuration's run (minibatches, drawn deltas, noise)."""
    return bool(cfg.batch_size is not None or cfg.delta_C_spread or cfg.delta_M_spread or cfg.init_noise
                or (cfg.filter_fraction and cfg.filter_noise) or (cfg.update_rule == "adam" and cfg.basis == "random"))


def simulate_summary(configs: Sequence[SimConfig], seeds: Sequence[int], steps: int | None = None):
    """:func:`summarize` of every configuration, run for every seed only where the seed matters.

    Deterministic configurations (:func:`is_stochastic` false) run once, with
    ``seeds[0]``: their other seeds would be identical copies. ``config_id`` is
    the position in ``configs``.
    """
    import pandas as pd

    from theory.simulator import simulate

    parts = []
    for pick, sd in ((lambda c: not is_stochastic(c), list(seeds)[:1]), (is_stochastic, list(seeds))):
        ids = [i for i, c in enumerate(configs) if pick(c)]
        if ids:
            s = summarize(simulate([configs[i] for i in ids], seeds=sd, steps=steps, show_progress=False))
            s["config_id"] = [ids[k] for k in s["config_id"]]
            parts.append(s)
    return pd.concat(parts, ignore_index=True).sort_values(["config_id", "seed"], ignore_index=True)
