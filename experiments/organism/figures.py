"""Figures of an organism run: plotting functions take tables (and ``ax=None``) and return the figure.

:func:`make_organism_figures` draws every figure of one run into a folder
(PNG + PDF): the inversion curve (counterfactual / parametric accuracy and
log-prob margin vs step), the probe figures of ``mechinterp`` (attention to
context vs subject, value contributions, per-head attention change), and the
overlay of the organism's trajectory on the theory simulator's
(``mechinterp.theory_link_table`` / ``plot_theory_link``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

import mechinterp
from cpi.io import atomic_save_figure
from theory import SimConfig, simulate


log = logging.getLogger(__name__)


def _ax(ax: Any, figsize: tuple[float, float] = (5.0, 3.6)):
    if ax is not None:
        return ax.figure, ax

    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def trajectory_table(eval_summary: "pd.DataFrame") -> "pd.DataFrame":
    """One row per step of ``cpi evaluate``'s summary (category ALL, datasets averaged)."""
    s = eval_summary
    if "category" in s.columns:
        s = s[s["category"].astype(str).str.upper() == "ALL"]
    cols = [c for c in ("cf_acc", "param_acc", "mean_margin", "mean_reliance", "context_pref_rate", "cf_acc_lo",
                        "cf_acc_hi")
            if c in s.columns]
    return s.groupby("step")[cols].mean().reset_index().sort_values("step")


def plot_organism_inversion(eval_summary: "pd.DataFrame", ax: Any = None, title: str = "") -> "Figure":
    """Counterfactual (context) and parametric accuracy vs finetuning step, log-prob margin on a twin axis."""
    t = trajectory_table(eval_summary)
    fig, ax = _ax(ax, (5.5, 3.6))
    if "cf_acc" in t:
        ax.plot(t["step"], t["cf_acc"], "o-", color="tab:blue", label="context answer (cf_acc)")
        if {"cf_acc_lo", "cf_acc_hi"} <= set(t.columns):
            ax.fill_between(t["step"], t["cf_acc_lo"], t["cf_acc_hi"], color="tab:blue", alpha=0.15)
    elif "context_pref_rate" in t:
        ax.plot(t["step"], t["context_pref_rate"], "o-", color="tab:blue",
                label="context answer more likely (log-prob)")
    if "param_acc" in t:
        ax.plot(t["step"], t["param_acc"], "s-", color="tab:orange", label="parametric answer (param_acc)")
    ax.set_xlabel("finetuning step")
    ax.set_ylabel("accuracy on held-out conflicts")
    ax.set_ylim(-0.02, 1.02)
    if "mean_margin" in t:
        ax2 = ax.twinx()
        ax2.plot(t["step"], t["mean_margin"], "--", color="tab:green", label="log-prob margin (ctx - param)")
        ax2.axhline(0, color="tab:green", lw=0.5, alpha=0.5)
        ax2.set_ylabel("mean log-prob margin", color="tab:green")
        ax2.legend(loc="lower right", frameon=False, fontsize=7)
    ax.legend(loc="upper left", frameon=False, fontsize=7)
    ax.set_title(title or "Model organism: context reliance over finetuning")
    return fig


def plot_rho_sweep(table: "pd.DataFrame", ax: Any = None, metric: str = "cf_acc",
                   variants: Sequence[str] | None = None) -> "Figure":
    """``metric`` vs step, one line per sweep variant (mean over seeds, band = min..max over seeds).

    ``table``: the sweep's long table (``variant, seed, step, cf_acc, param_acc, mean_margin``).
    """
    fig, ax = _ax(ax, (6.0, 3.8))
    names = list(variants) if variants is not None else list(dict.fromkeys(table["variant"]))
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(names):
        g = table[table["variant"] == name].groupby("step")[metric]
        mean, lo, hi = g.mean(), g.min(), g.max()
        color = cmap(i / max(1, len(names) - 1))
        n_seeds = table[table["variant"] == name]["seed"].nunique()
        ax.plot(mean.index, mean.values, "o-", ms=3, color=color, label=f"{name} (n={n_seeds})")
        ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.12)
    ax.set_xlabel("finetuning step")
    ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
    ax.legend(frameon=False, fontsize=7)
    ax.set_title(f"{metric} over finetuning (mean over seeds, band = range)")
    return fig


_METRIC_LABELS = {"cf_acc": "counterfactual accuracy", "param_acc": "parametric accuracy",
                  "mean_margin": "log-prob margin (ctx - param)", "ctx_attn": "attention to context"}


def plot_seeds(table: "pd.DataFrame", variant: str, metric: str = "cf_acc", ax: Any = None) -> "Figure":
    """``metric`` vs step for one variant, one line per seed (nothing averaged away).

    A rise-then-fall in one seed can vanish in a seed mean; this shows each seed's shape.
    ``table``: long table with ``variant, seed, step`` and ``metric`` columns.
    """
    rows = table[table["variant"] == variant]
    if rows.empty:
        raise ValueError(f"variant {variant!r} not in the table (variants: {sorted(set(table['variant']))})")
    fig, ax = _ax(ax, (4.0, 3.0))
    cmap = plt.get_cmap("tab10")
    for seed, g in rows.sort_values("step").groupby("seed"):
        ax.plot(g["step"], g[metric], "o-", ms=2.5, color=cmap(int(seed) % 10), label=f"seed {seed}")  # same seed, same colour
    ax.set_xlabel("finetuning step")
    ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{variant}: {metric}", fontsize=9)
    ax.legend(frameon=False, fontsize=7)
    return fig


def _save(fig: "Figure", out: Path, name: str) -> list[Path]:
    paths = [atomic_save_figure(fig, out / f"{name}.png", dpi=150), atomic_save_figure(fig, out / f"{name}.pdf")]
    plt.close(fig)
    return paths


def theory_reference_table(quick: bool = False) -> "pd.DataFrame":
    """The theory simulator's default trajectory (QK-only, the setting of Proposition 1 and Theorem 1)."""
    cfg = SimConfig(steps=150 if quick else 300)
    return simulate(cfg, seeds=(0,), show_progress=False)


def make_organism_figures(run: Any, out_dir: str | Path, prefix: str = "organism") -> list[Path]:
    """Draw every figure of ``run`` (an :class:`~experiments.organism.experiment.OrganismRun`) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    paths += _save(plot_organism_inversion(run.eval_summary), out, f"{prefix}_inversion")
    if run.probe is None or not len(run.probe):
        return paths

    steps = mechinterp.steps_table(run.probe)
    paths += _save(mechinterp.plot_context_vs_subject(steps), out, f"{prefix}_probe_attention")
    paths += _save(mechinterp.plot_value_contributions(steps), out, f"{prefix}_probe_values")
    if steps["step"].nunique() >= 2:
        heads = mechinterp.head_change_table(run.probe)
        paths += _save(mechinterp.plot_attention_change(heads), out, f"{prefix}_probe_heads")
    try:
        theory_table = theory_reference_table(quick=run.config.finetune.steps < 200)
    except Exception as exc:  # the overlay is optional: the theory package may be unavailable
        log.warning("theory overlay skipped: %s", exc)
        return paths
    link = mechinterp.theory_link_table(theory_table, run.probe, run.eval_summary)
    paths += _save(mechinterp.plot_theory_link(link), out, f"{prefix}_theory_overlay")
    return paths


__all__ = ["plot_organism_inversion", "plot_rho_sweep", "plot_seeds", "trajectory_table", "make_organism_figures"]
