"""Sweeps over configurations and per-run summaries of the inversion.

:func:`default_sweep_configs` is the grid behind the phase diagram
(n_CS/n_C x delta_M/delta_C x eta x K_A, 240 configurations);
:func:`summarize` turns a trajectory table into one row per (config, seed)
with the inversion magnitude (peak M_C - final M_C) and the time to peak;
:func:`comparison_configs` is the set of runs compared in the trajectory
figures (control, QK-only vs full, S points, augmentation).
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


def summarize(table, metric: str = "M_C"):
    """One row per (config_id, seed): start, peak, time to peak, final, minimum after the peak.

    ``inversion`` = peak - final (how far reliance falls from its peak),
    ``rise`` = peak - start, ``recovery`` = final - min_after_peak (> 0 if
    reliance climbs back after its lowest point), ``fall_steps`` = steps from
    the peak until the fall has covered 90% of its total drop (peak - min_after_peak).
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
