"""Regenerate every theory figure (PNG + PDF) from the package's defaults.

:func:`make_all_figures` is what ``cpi theory figures`` and the README's main
command run; each ``figures/theory_*.py`` script calls one of the builders.
Computing happens here (simulate / sweep), drawing in :mod:`theory.plots`.
The closer-to-practice figures (optimizers, filtering, overlap) and the
reverse-regime grid also write their tidy per-run table as ``<name>.csv``
next to the figure (:data:`TABLES`); stochastic runs use :data:`SEEDS`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from theory.config import SimConfig

log = logging.getLogger(__name__)

DPI = 120
FIGURES = ("theory_trajectory", "theory_comparison", "theory_phase_diagram", "theory_eta_star",
           "theory_optimizers", "theory_filtering", "theory_overlap")
#: the tidy tables written next to the closer-to-practice figures (one row per run)
TABLES = ("theory_optimizers", "theory_filtering", "theory_overlap", "theory_reverse_regime")
SEEDS = (0, 1, 2, 3, 4)
QUICK_STEPS = 40  # --quick: the closer-to-practice figures run this many steps on 2 seeds and a thin grid
#: no dates or writer versions in the files: regenerating a figure gives the same bytes
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None}}


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    from cpi.io import atomic_save_figure

    paths = [atomic_save_figure(fig, out_dir / f"{name}.png", dpi=DPI, metadata=dict(_METADATA["png"])),
             atomic_save_figure(fig, out_dir / f"{name}.pdf", metadata=dict(_METADATA["pdf"]))]
    plt.close(fig)
    return paths


def _save_table(table, out_dir: Path, name: str) -> Path:
    from cpi.io import atomic_write_table

    return atomic_write_table(table, Path(out_dir) / f"{name}.csv")


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
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    plot_comparison(table, "M_C", ax=axes[0], labels=names, legend=False)
    axes[0].set_title("context reliance $M_C$ on held-out counterfactuals")
    plot_comparison(table, "attn_context_test", ax=axes[1], labels=names, legend=False)
    axes[1].set_title("attention on the context (test points)")
    plot_comparison(table, "value_pred_C", ax=axes[2], labels=names, legend=False)
    axes[2].set_title(r"Prop. 3: softmax$(v(s))_c$ of C points")
    axes[2].set_yscale("log")
    handles, labs = axes[0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save(fig, Path(out_dir), "theory_comparison")


def phase_diagram_figure(out_dir: Path, quick: bool = False) -> list[Path]:
    """Inversion magnitude and time to peak over n_CS/n_C x delta_M/delta_C x eta x K_A."""
    import matplotlib.pyplot as plt

    from theory.plots import plot_phase_diagram, plot_regime_map
    from theory.simulator import simulate
    from theory.sweep import REVERSE_BASE, SWEEP_BASE, default_sweep_configs, reverse_regime_configs, summarize

    if quick:
        cfgs = default_sweep_configs(SimConfig(**SWEEP_BASE, steps=100), delta_M=(0.45, 0.75), lrs=(2.0,), K_A=(32,))
    else:
        cfgs = default_sweep_configs()
    summary = summarize(simulate(cfgs))
    rev_cfgs = reverse_regime_configs()
    if quick:
        rev_cfgs = [c.replace(steps=100) for c in rev_cfgs]
    rev = summarize(simulate(rev_cfgs, show_progress=False))
    example = simulate([SimConfig(**REVERSE_BASE, steps=rev_cfgs[0].steps, label="reverse"),
                        SimConfig(**{**REVERSE_BASE, "delta_C": 0.2}, steps=rev_cfgs[0].steps, label="inversion")],
                       show_progress=False)
    fig, axes = plt.subplots(3, 2, figsize=(11, 12))
    plot_phase_diagram(summary, "inversion", "ratio_CS_C", "ratio_M_C", ax=axes[0, 0])
    plot_phase_diagram(summary, "t_peak", "ratio_CS_C", "ratio_M_C", ax=axes[0, 1], cmap="magma")
    plot_phase_diagram(summary, "inversion", "ratio_CS_C", "lr", ax=axes[1, 0])
    plot_phase_diagram(summary, "inversion", "ratio_CS_C", "K_A", ax=axes[1, 1])
    plot_regime_map(rev, "delta_C", "delta_M", ax=axes[2, 0])
    axes[2, 0].set_title(f"where Lemma 6 fails: n_C = n_C+S = {REVERSE_BASE['n_C']}, K_A = {REVERSE_BASE['K_A']}, "
                         f"o_c = {REVERSE_BASE['o_c']}", fontsize=8)
    for (lab, g), color in zip(example.groupby("label", sort=False), ("C3", "C0")):
        dc = g["delta_C"].iloc[0]
        axes[2, 1].plot(g["step"], g["M_C"], color=color,
                        label=rf"$\delta_C$ = {dc:g}, $\delta_M$ = {g['delta_M'].iloc[0]:g}: {lab}")
    axes[2, 1].set_xlabel("gradient step")
    axes[2, 1].set_ylabel("$M_C$ on held-out counterfactuals")
    axes[2, 1].set_xscale("symlog", linthresh=10)
    axes[2, 1].set_title("reverse regime: $M_C$ dips, then rises above its start (x: symlog, linear below 10)", fontsize=8)
    axes[2, 1].legend(fontsize=7)
    fig.suptitle(f"top: {len(cfgs)} configurations x {cfgs[0].steps} steps (means over the other swept parameters); "
                 "bottom: the reverse regime", fontsize=10)
    fig.tight_layout()
    axes[2, 0].text(0.99, 0.01, "white: inadmissible ($\\delta_M \\leq 2\\delta_C$)", transform=axes[2, 0].transAxes,
                    ha="right", va="bottom", fontsize=6)
    return [_save_table(rev, Path(out_dir), "theory_reverse_regime"), *_save(fig, Path(out_dir), "theory_phase_diagram")]


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


def _in_optimizer_order(table):
    """Rows sorted by the optimizer variants' order in :data:`theory.sweep.OPTIMIZERS` (stable otherwise)."""
    from theory.sweep import OPTIMIZERS

    order = {name: i for i, name in enumerate(OPTIMIZERS)}
    return table.sort_values("label", key=lambda col: col.map(order), kind="stable", ignore_index=True)


def optimizers_figure(out_dir: Path, quick: bool = False) -> list[Path]:
    """Inversion and time to peak under GD, SGD, Adam and AdamW over n_C+S/n_C and the learning rate."""
    from theory.plots import plot_optimizers
    from theory.sweep import OPT_RATIOS, OPTIMIZERS, PRACTICE_BASE, optimizer_configs, seed_intervals, simulate_summary

    base = SimConfig(**{**PRACTICE_BASE, "steps": QUICK_STEPS if quick else PRACTICE_BASE["steps"]})
    opts = {k: (c, lrs[1:2] if quick else lrs) for k, (c, lrs) in OPTIMIZERS.items()}
    cfgs = optimizer_configs(base, ratios=(0.0, 2.0) if quick else OPT_RATIOS, optimizers=opts)
    summary = simulate_summary(cfgs, SEEDS[:2] if quick else SEEDS)
    iv = _in_optimizer_order(seed_intervals(summary, ["label", "lr", "ratio_CS_C"]))
    fig = plot_optimizers(iv, base.steps)
    return [_save_table(summary, Path(out_dir), "theory_optimizers"), *_save(fig, Path(out_dir), "theory_optimizers")]


def filtering_figure(out_dir: Path, quick: bool = False) -> list[Path]:
    """Inversion against the precision of a noisy filter (heterogeneous points), GD and AdamW."""
    from theory.plots import plot_filtering
    from theory.sweep import FILTER_BASE, FILTER_NOISES, filtering_configs, simulate_summary

    base = SimConfig(**{**FILTER_BASE, "steps": QUICK_STEPS if quick else FILTER_BASE["steps"]})
    cfgs = filtering_configs(base, noises=(0.0, 20.0) if quick else FILTER_NOISES)
    summary = simulate_summary(cfgs, SEEDS[:2] if quick else SEEDS)
    fig = plot_filtering(_in_optimizer_order(summary))
    return [_save_table(summary, Path(out_dir), "theory_filtering"), *_save(fig, Path(out_dir), "theory_filtering")]


def overlap_figure(out_dir: Path, quick: bool = False) -> list[Path]:
    """Inversion and time to peak with overlapping embeddings and distractor tokens, GD and AdamW."""
    from theory.plots import plot_overlap
    from theory.sweep import OVERLAPS, PRACTICE_BASE, overlap_configs, seed_intervals, simulate_summary

    base = SimConfig(**{**PRACTICE_BASE, "K_A": None, "steps": QUICK_STEPS if quick else PRACTICE_BASE["steps"]})
    cfgs = overlap_configs(base, overlaps=(0.0, 0.5) if quick else OVERLAPS, ratios=(0.0, 2.0) if quick else (0.0, 0.5, 1.0, 2.0))
    summary = simulate_summary(cfgs, SEEDS[:2] if quick else SEEDS)
    iv = _in_optimizer_order(seed_intervals(summary, ["label", "n_distractors", "overlap", "ratio_CS_C"],
                                            values=("rise", "inversion", "t_peak")))
    fig = plot_overlap(iv, base.steps)
    return [_save_table(summary, Path(out_dir), "theory_overlap"), *_save(fig, Path(out_dir), "theory_overlap")]


def make_all_figures(out_dir: Path, quick: bool = False, names: Sequence[str] | None = None) -> list[Path]:
    """Regenerate the theory figures (PNG + PDF, and their tables) into ``out_dir``; returns the written paths.

    ``names``: a subset of :data:`FIGURES` (default: all). The three closer-to-practice figures
    (theory_optimizers, theory_filtering, theory_overlap) take minutes; the first four seconds.
    """
    from cpi.errors import CpiError
    from cpi.progress import progress

    builders = dict(zip(FIGURES, (trajectory_figure, comparison_figure, phase_diagram_figure, eta_star_figure,
                                  optimizers_figure, filtering_figure, overlap_figure)))
    names = list(FIGURES) if names is None else list(names)
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise CpiError(f"theory figures: unknown figure '{unknown[0]}' (known: {', '.join(FIGURES)})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name in progress(names, desc="theory figures", total=len(names)):
        paths.extend(builders[name](out_dir, quick=quick))
    return paths
