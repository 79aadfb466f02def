"""Regenerate every theory figure (PNG + PDF) from the package's defaults.

:func:`make_all_figures` is what ``cpi theory figures`` and the README's main
command run; each ``figures/theory_*.py`` script calls one of the builders.
Computing happens here (simulate / sweep), drawing in :mod:`theory.plots`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from theory.config import SimConfig

log = logging.getLogger(__name__)

DPI = 120
FIGURES = ("theory_trajectory", "theory_comparison", "theory_phase_diagram", "theory_eta_star")


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    from cpi.io import atomic_save_figure

    paths = [atomic_save_figure(fig, out_dir / f"{name}.png", dpi=DPI), atomic_save_figure(fig, out_dir / f"{name}.pdf")]
    plt.close(fig)
    return paths


def trajectory_figure(out_dir: Path, quick: bool = False, base: SimConfig | None = None) -> list[Path]:
    """Default run over hundreds of steps: reliance, attention, losses, shared-direction gradients."""
    from theory.plots import plot_trajectory
    from theory.simulator import simulate

    base = base if base is not None else SimConfig()
    cfg = base.replace(steps=100) if quick else base
    table = simulate(cfg)
    fig = plot_trajectory(table, title=f"default: n_C={cfg.n_C}, n_C+S={cfg.n_CS}, delta_C={cfg.delta_C}, "
                                        f"delta_M={cfg.delta_M}, eta={cfg.lr}, {cfg.mode}")
    return _save(fig, Path(out_dir), "theory_trajectory")


def comparison_figure(out_dir: Path, quick: bool = False, base: SimConfig | None = None) -> list[Path]:
    """M_C, C+S loss and subject-value predictiveness for the control / QK vs full / S / augmentation runs."""
    import matplotlib.pyplot as plt

    from theory.plots import plot_comparison
    from theory.simulator import simulate
    from theory.sweep import comparison_configs

    base = base if base is not None else SimConfig()
    if quick:
        base = base.replace(steps=100)
    named = comparison_configs(base)
    table = simulate(list(named.values()))
    names = {c.label: k for k, c in named.items()}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    plot_comparison(table, "M_C", ax=axes[0], labels=names)
    axes[0].set_title("context reliance $M_C$ on held-out counterfactuals")
    plot_comparison(table, "attn_context_test", ax=axes[1], labels=names)
    axes[1].set_title("attention on the context (test points)")
    plot_comparison(table, "value_pred_C", ax=axes[2], labels=names)
    axes[2].set_title(r"Prop. 3: softmax$(v(s))_c$ of C points")
    axes[2].set_yscale("log")
    fig.tight_layout()
    return _save(fig, Path(out_dir), "theory_comparison")


def phase_diagram_figure(out_dir: Path, quick: bool = False) -> list[Path]:
    """Inversion magnitude and time to peak over n_CS/n_C x delta_M/delta_C x eta x K_A."""
    import matplotlib.pyplot as plt

    from theory.plots import plot_phase_diagram
    from theory.simulator import simulate
    from theory.sweep import SWEEP_BASE, default_sweep_configs, summarize

    if quick:
        cfgs = default_sweep_configs(SimConfig(**SWEEP_BASE, steps=100), delta_M=(0.45, 0.75), lrs=(2.0,), K_A=(32,))
    else:
        cfgs = default_sweep_configs()
    summary = summarize(simulate(cfgs))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    plot_phase_diagram(summary, "inversion", "ratio_CS_C", "ratio_M_C", ax=axes[0, 0])
    plot_phase_diagram(summary, "t_peak", "ratio_CS_C", "ratio_M_C", ax=axes[0, 1], cmap="magma")
    plot_phase_diagram(summary, "inversion", "ratio_CS_C", "lr", ax=axes[1, 0])
    plot_phase_diagram(summary, "inversion", "ratio_CS_C", "K_A", ax=axes[1, 1])
    fig.suptitle(f"{len(cfgs)} configurations x {cfgs[0].steps} steps (means over the other swept parameters)")
    fig.tight_layout()
    return _save(fig, Path(out_dir), "theory_phase_diagram")


def eta_star_figure(out_dir: Path, quick: bool = False, base: SimConfig | None = None) -> list[Path]:
    """Proposition 1 / Theorem 1 as a function of the step size, with the smallest eta* marked."""
    import numpy as np

    from theory.plots import plot_eta_scan
    from theory.sweep import eta_scan, find_eta_star_sim

    base = base if base is not None else SimConfig()
    scan = eta_scan(base, np.logspace(-1, 3, 60 if quick else 200))
    if quick:  # first grid point with a second phase
        neg = np.flatnonzero(scan["G1"].to_numpy() < 0)
        eta_star = float(scan["eta"].iloc[neg[0]]) if neg.size else float("nan")
    else:
        eta_star = find_eta_star_sim(base)
    fig = plot_eta_scan(scan, eta_star)
    return _save(fig, Path(out_dir), "theory_eta_star")


def make_all_figures(out_dir: Path, quick: bool = False) -> list[Path]:
    """Regenerate every theory figure (PNG + PDF) into ``out_dir``; returns the written paths."""
    from cpi.progress import progress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    builders = (trajectory_figure, comparison_figure, phase_diagram_figure, eta_star_figure)
    paths: list[Path] = []
    for build in progress(builders, desc="theory figures", total=len(builders)):
        paths.extend(build(out_dir, quick=quick))
    return paths
