"""Plotting functions for the theory tables (they never compute).

Each takes a table from :func:`theory.simulate`, :func:`theory.sweep.summarize`
or :func:`theory.sweep.eta_scan` plus an optional matplotlib axis (or axes)
and returns the Figure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _fig_ax(ax, figsize=(5, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _mean_by_step(table, cols: Sequence[str]):
    return table.groupby("step")[list(cols)].mean()


def plot_reliance(table, ax=None, title: str | None = None):
    """M_C, counterfactual and parametric accuracy on held-out test points vs step."""
    fig, ax = _fig_ax(ax)
    g = _mean_by_step(table, ["M_C", "cf_acc", "param_acc"])
    ax.plot(g.index, g["M_C"], label="$M_C$ (context reliance)", color="C0", lw=2)
    ax.plot(g.index, g["cf_acc"], label="counterfactual acc.", color="C2", ls="--")
    ax.plot(g.index, g["param_acc"], label="parametric acc.", color="C3", ls=":")
    ax.set_xlabel("gradient step")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title or "held-out counterfactual points")
    ax.legend(fontsize=7)
    return fig


def plot_attention(table, ax=None):
    """Mean attention on context and subject for test, C and C+S points vs step."""
    fig, ax = _fig_ax(ax)
    cols = ["attn_context_test", "attn_subject_test", "attn_context_C", "attn_subject_C", "attn_context_CS", "attn_subject_CS"]
    g = _mean_by_step(table, cols)
    for kind, color in (("test", "C0"), ("C", "C1"), ("CS", "C4")):
        name = {"test": "test", "C": "C", "CS": "C+S"}[kind]
        if g[f"attn_context_{kind}"].notna().any():
            ax.plot(g.index, g[f"attn_context_{kind}"], color=color, label=f"context ({name})")
            ax.plot(g.index, g[f"attn_subject_{kind}"], color=color, ls="--", label=f"subject ({name})")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("attention from r")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("attention")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_losses(table, ax=None):
    """Finetuning loss on C and C+S points vs step (log scale)."""
    fig, ax = _fig_ax(ax)
    g = _mean_by_step(table, ["loss_C", "loss_CS"])
    ax.plot(g.index, g["loss_C"], label="C points", color="C1")
    if g["loss_CS"].notna().any():
        ax.plot(g.index, g["loss_CS"], label="C+S points", color="C4")
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("cross-entropy")
    ax.set_title("finetuning loss")
    ax.legend(fontsize=7)
    return fig


def plot_gradients(table, ax=None):
    """theta_C / theta_S projections of -grad_{W_KQ} L phi(r) vs step (symlog)."""
    fig, ax = _fig_ax(ax)
    g = _mean_by_step(table, ["grad_theta_C", "grad_theta_S"])
    ax.plot(g.index, g["grad_theta_C"], label=r"$\theta_C^\top[-\nabla L]\phi(r)$", color="C0")
    ax.plot(g.index, g["grad_theta_S"], label=r"$\theta_S^\top[-\nabla L]\phi(r)$", color="C3")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("gradient step")
    ax.set_title("shared-direction gradient")
    ax.legend(fontsize=7)
    return fig


def plot_trajectory(table, axes=None, title: str | None = None):
    """Four panels: reliance, attention, losses, shared-direction gradients."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    axes = np.asarray(axes).ravel()
    plot_reliance(table, axes[0])
    plot_attention(table, axes[1])
    plot_losses(table, axes[2])
    plot_gradients(table, axes[3])
    fig = axes[0].figure
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_comparison(table, metric: str = "M_C", ax=None, label_col: str = "label", labels: dict | None = None):
    """``metric`` vs step, one line per configuration (grouped by ``label_col``)."""
    fig, ax = _fig_ax(ax, figsize=(6, 4))
    for i, (lab, g) in enumerate(table.groupby(label_col, sort=False)):
        m = g.groupby("step")[metric].mean()
        ax.plot(m.index, m.values, label=(labels or {}).get(lab, lab), color=f"C{i}")
    ax.set_xlabel("gradient step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return fig


def plot_phase_diagram(summary, value: str = "inversion", x: str = "ratio_CS_C", y: str = "ratio_M_C", ax=None, cmap: str = "viridis"):
    """Heatmap of ``value`` (mean over all other swept parameters) on the (x, y) grid."""
    fig, ax = _fig_ax(ax, figsize=(5, 4))
    piv = summary.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index(ascending=False)
    im = ax.imshow(piv.to_numpy(dtype=float), aspect="auto", cmap=cmap)
    ax.set_xticks(range(piv.shape[1]))
    ax.set_xticklabels([f"{v:.3g}" for v in piv.columns], fontsize=7)
    ax.set_yticks(range(piv.shape[0]))
    ax.set_yticklabels([f"{v:.3g}" for v in piv.index], fontsize=7)
    ax.set_xlabel(_PRETTY.get(x, x))
    ax.set_ylabel(_PRETTY.get(y, y))
    ax.set_title(_PRETTY.get(value, value), fontsize=9)
    for (i, j), v in np.ndenumerate(piv.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax)
    return fig


_PRETTY = {
    "ratio_CS_C": "$n_{C+S}/n_C$",
    "ratio_M_C": r"$\delta_M/\delta_C$",
    "lr": r"step size $\eta$",
    "K_A": "$K_A$",
    "inversion": "inversion: peak $M_C$ - final $M_C$",
    "t_peak": "time to peak (steps)",
    "rise": "rise: peak $M_C$ - start",
}


def plot_eta_scan(scan, eta_star: float | None = None, axes=None):
    """Proposition 1 / Theorem 1 vs step size: the t=1 theta_C gradient and M_C at t = 0, 1, 2."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1, ax2 = axes
    ax1.plot(scan["eta"], scan["G0"], label=r"$t=0$", color="C0")
    ax1.plot(scan["eta"], scan["G1"], label=r"$t=1$", color="C3")
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_xscale("log")
    ax1.set_xlabel(r"step size $\eta$")
    ax1.set_ylabel(r"$\theta_C^\top[-\nabla L(W^{(t)})]\phi(r)$")
    for t, c in ((0, "C7"), (1, "C0"), (2, "C3")):
        ax2.plot(scan["eta"], scan[f"M_C{t}"], label=f"$M_C^{{({t})}}$", color=c)
    ax2.set_xscale("log")
    ax2.set_xlabel(r"step size $\eta$")
    ax2.set_ylabel("$M_C$ on held-out points")
    for ax in (ax1, ax2):
        if eta_star is not None and np.isfinite(eta_star):
            ax.axvline(eta_star, color="k", ls="--", lw=0.8, label=rf"$\eta^*$ = {eta_star:.3g}")
        ax.legend(fontsize=7)
    fig = ax1.figure
    fig.tight_layout()
    return fig
