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


def _tick(v) -> str:
    """A grid value as a tick label: numbers to 3 significant digits, anything else as is."""
    return f"{v:.3g}" if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else str(v)


def _grid_axes(ax, piv, x: str, y: str) -> None:
    """Ticks and labels of a heatmap drawn from the pivot table ``piv`` (columns = x, index = y)."""
    ax.set_xticks(range(piv.shape[1]))
    ax.set_xticklabels([_tick(v) for v in piv.columns], fontsize=7)
    ax.set_yticks(range(piv.shape[0]))
    ax.set_yticklabels([_tick(v) for v in piv.index], fontsize=7)
    ax.set_xlabel(_PRETTY.get(x, x))
    ax.set_ylabel(_PRETTY.get(y, y))


def _mean_by_step(table, cols: Sequence[str]):
    return table.groupby("step")[list(cols)].mean()


def plot_reliance(table, ax=None, title: str | None = None):
    """M_C, counterfactual and parametric accuracy on held-out test points vs step.

    The accuracies are argmax readings: they flip when M_C crosses 0.5, however
    slightly; the panel says by how much M_C is past 0.5 at the last flip.
    """
    fig, ax = _fig_ax(ax)
    g = _mean_by_step(table, ["M_C", "cf_acc", "param_acc"])
    ax.axhline(0.5, color="0.6", lw=0.6, ls=":")
    ax.plot(g.index, g["cf_acc"], label="counterfactual acc. (argmax)", color="C2", lw=0.9, alpha=0.6, ls="--")
    ax.plot(g.index, g["param_acc"], label="parametric acc. (argmax)", color="C3", lw=0.9, alpha=0.6, ls=":")
    ax.plot(g.index, g["M_C"], label="$M_C$ (context reliance)", color="C0", lw=2)
    flips = np.flatnonzero(np.diff(g["cf_acc"].to_numpy()) != 0)
    if flips.size:
        k = int(flips[-1]) + 1
        past = abs(float(g["M_C"].iloc[k]) - 0.5)
        ax.annotate(f"argmax flips at step {g.index[k]}:\n$M_C$ is {past:.1g} past 0.5", xy=(g.index[k], 0.5),
                    xytext=(0.25, 0.3), textcoords="axes fraction", fontsize=7,
                    arrowprops=dict(arrowstyle="->", color="0.4", lw=0.6))
    ax.set_xlabel("gradient step")
    ax.set_ylabel("$M_C$ / accuracy on held-out points")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title or "held-out counterfactual points")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.2, 0.96))
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
    """|theta_C / theta_S projections of -grad_{W_KQ} L phi(r)| vs step on a log scale.

    Solid where the projection is positive, dotted where negative (no symlog
    threshold, so no kink that is only an axis artefact).
    """
    fig, ax = _fig_ax(ax)
    g = _mean_by_step(table, ["grad_theta_C", "grad_theta_S"])
    x = g.index.to_numpy()
    for col, color, name in (("grad_theta_C", "C0", r"$\theta_C$"), ("grad_theta_S", "C3", r"$\theta_S$")):
        y = g[col].to_numpy()
        ax.plot(x, np.where(y > 0, np.abs(y), np.nan), color=color, label=f"{name}, positive")
        ax.plot(x, np.where(y < 0, np.abs(y), np.nan), color=color, ls=":", label=f"{name}, negative")
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel(r"$|\theta^\top[-\nabla_{W_{KQ}} L]\,\phi(r)|$")
    ax.set_title("shared-direction gradient (sign by line style)")
    ax.legend(fontsize=7, ncol=2)
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


def plot_comparison(table, metric: str = "M_C", ax=None, label_col: str = "label", labels: dict | None = None,
                    legend: bool = True):
    """``metric`` vs step, one line per configuration (grouped by ``label_col``).

    ``legend=False`` leaves the legend to the caller (e.g. one legend below several panels).
    """
    fig, ax = _fig_ax(ax, figsize=(6, 4))
    for i, (lab, g) in enumerate(table.groupby(label_col, sort=False)):
        m = g.groupby("step")[metric].mean()
        ax.plot(m.index, m.values, label=(labels or {}).get(lab, lab), color=f"C{i}")
    ax.set_xlabel("gradient step")
    ax.set_ylabel(_PRETTY.get(metric, metric))
    if legend:
        ax.legend(fontsize=7)
    return fig


def plot_phase_diagram(summary, value: str = "inversion", x: str = "ratio_CS_C", y: str = "ratio_M_C", ax=None, cmap: str = "viridis"):
    """Heatmap of ``value`` (mean over all other swept parameters) on the (x, y) grid.

    Cell text is black or white by the cell's brightness. For ``t_peak`` a cell
    where no run peaked before its last step reads "none".
    """
    import matplotlib

    fig, ax = _fig_ax(ax, figsize=(5, 4))
    piv = summary.pivot_table(index=y, columns=x, values=value, aggfunc="mean").sort_index(ascending=False)
    vals = piv.to_numpy(dtype=float)
    none = np.zeros_like(vals, dtype=bool)
    if value == "t_peak" and "peaked" in summary:
        pk = summary.assign(peaked=summary["peaked"].astype(float))
        none = pk.pivot_table(index=y, columns=x, values="peaked", aggfunc="max").reindex_like(piv).to_numpy() == 0
    im = ax.imshow(vals, aspect="auto", cmap=cmap)
    _grid_axes(ax, piv, x, y)
    ax.set_title(_PRETTY.get(value, value), fontsize=9)
    cm = matplotlib.colormaps[cmap]
    for (i, j), v in np.ndenumerate(vals):
        if np.isfinite(v):
            r, g, b, _ = cm(im.norm(v))
            color = "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"
            text = "none" if none[i, j] else (f"{v:.2f}" if abs(v) < 10 and value != "t_peak" else f"{v:.0f}")
            ax.text(j, i, text, ha="center", va="center", fontsize=6, color=color)
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(_COLORBAR.get(value, _PRETTY.get(value, value)), fontsize=7)
    return fig


_COLORBAR = {
    "inversion": "peak $M_C$ - final $M_C$ (mean)",
    "t_peak": "step of the $M_C$ peak (mean; last step = no peak)",
}


_PRETTY = {
    "M_C": "$M_C$ on held-out counterfactuals",
    "attn_context_test": "attention on the context (test)",
    "value_pred_C": "softmax$(v(s))_c$ of C points",
    "delta_C": r"$\delta_C$",
    "delta_M": r"$\delta_M$",
    "overlap": "cosine of identity parts",
    "filter_precision": "filter precision (share of dropped points that are C+S)",
    "ratio_CS_C": "$n_{C+S}/n_C$",
    "ratio_M_C": r"$\delta_M/\delta_C$",
    "lr": r"step size $\eta$",
    "K_A": "$K_A$",
    "inversion": "inversion: peak $M_C$ - final $M_C$",
    "t_peak": "time to peak (steps)",
    "rise": "rise: peak $M_C$ - start",
}


def plot_eta_scan(scan, eta_star: float | None = None, axes=None):
    """Proposition 1 / Theorem 1 vs step size: the t=1 theta_C gradient and M_C at t = 0, 1, 2.

    ``eta_star``: the smallest step size with a second phase (eta_min), marked as such.
    """
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
            ax.axvline(eta_star, color="k", ls="--", lw=0.8,
                       label=rf"$\eta_{{min}}$ = {eta_star:.4g}")
            ax.set_title(r"dashed: $\eta_{min}$, the smallest $\eta$ with a second phase", fontsize=8)
        ax.legend(fontsize=7, loc="center right")  # right of eta_min both panels are flat and empty mid-height
    fig = ax1.figure
    fig.tight_layout()
    return fig


def _interval_lines(iv, x: str, line: str, ax, styles=None, label_fmt="{}", bounds=(None, None)):
    """Mean lines with shaded 95% intervals from a :func:`theory.sweep.seed_intervals` table (one value).

    ``bounds``: the value's possible range; the shaded interval is clipped to it.
    """
    for i, (key, g) in enumerate(iv.groupby(line, sort=True)):
        g = g.sort_values(x)
        st = dict((styles or {}).get(key, {}))
        color = st.pop("color", f"C{i}")
        ax.plot(g[x], g["mean"], marker="o", ms=3, color=color, label=label_fmt.format(key), **st)
        ax.fill_between(g[x], g["lo"].clip(*bounds), g["hi"].clip(*bounds), color=color, alpha=0.18, lw=0)


def plot_optimizers(intervals, steps: int, axes=None):
    """Inversion magnitude and time to peak vs n_C+S/n_C, one column per optimizer, one line per lr.

    ``intervals``: :func:`theory.sweep.seed_intervals` by (label, lr, ratio_CS_C) for
    values inversion and t_peak. ``steps``: the run length (t_peak = steps: no peak).
    """
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(intervals["label"]))
    if axes is None:
        fig, axes = plt.subplots(2, len(labels), figsize=(3.3 * len(labels), 6.2), sharex=True, sharey="row", squeeze=False)
    axes = np.asarray(axes).reshape(2, -1)
    for j, lab in enumerate(labels):
        sub = intervals[intervals["label"] == lab]
        n = int(sub["n"].max())
        for i, v in enumerate(("inversion", "t_peak")):
            ax = axes[i, j]
            _interval_lines(sub[sub["value"] == v], "ratio_CS_C", "lr", ax, label_fmt=r"$\eta$ = {:g}",
                            bounds=(0, steps) if v == "t_peak" else (0, None))
            if v == "t_peak":
                ax.axhline(steps, color="0.5", lw=0.6, ls=":")
                ax.set_xlabel(_PRETTY["ratio_CS_C"])
            else:
                ax.set_title(f"{lab}\n({n} seed{'s' if n > 1 else ''}{', deterministic' if n == 1 else ''})", fontsize=8)
                ax.legend(fontsize=7, loc="upper left")
        axes[0, 0].set_ylabel("inversion: peak $M_C$ - final $M_C$")
        axes[1, 0].set_ylabel(f"step of the $M_C$ peak\n({steps} = no peak within the run)")
    fig = axes[0, 0].figure
    fig.tight_layout()
    return fig


def plot_filtering(summary, axes=None):
    """Inversion vs the filter's measured precision, one panel per optimizer (label).

    Points: one run each (filter fraction by colour); lines: mean per noise level;
    the grey band: the unfiltered runs' mean +- sd.
    """
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(summary["label"]))
    if axes is None:
        fig, axes = plt.subplots(1, len(labels), figsize=(4.6 * len(labels), 3.8), sharey=True, squeeze=False)
    axes = np.asarray(axes).ravel()
    for ax, lab in zip(axes, labels):
        sub = summary[summary["label"] == lab]
        base = sub[sub["filter_fraction"] == 0]["inversion"]
        ax.axhspan(base.mean() - base.std(ddof=1 if len(base) > 1 else 0), base.mean() + base.std(ddof=1 if len(base) > 1 else 0),
                   color="0.85", lw=0)
        ax.axhline(base.mean(), color="0.4", lw=0.8, label=f"no filter (mean of {len(base)})")
        filt = sub[sub["filter_fraction"] > 0]
        for i, (frac, g) in enumerate(filt.groupby("filter_fraction", sort=True)):
            ax.scatter(g["filter_precision"], g["inversion"], s=9, color=f"C{i}", alpha=0.45)
            m = g.groupby("filter_noise")[["filter_precision", "inversion"]].mean().sort_values("filter_precision")
            ax.plot(m["filter_precision"], m["inversion"], color=f"C{i}", marker="o", ms=3,
                    label=f"drop {frac:.0%} (mean per noise level)")
        ax.set_xlabel(_PRETTY["filter_precision"], fontsize=8)
        ax.set_title(lab, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("inversion: peak $M_C$ - final $M_C$")
    fig = axes[0].figure
    fig.tight_layout()
    return fig


def plot_overlap(intervals, steps: int, axes=None):
    """Rise, inversion and time to peak vs n_C+S/n_C at each overlap level (colour) and distractor
    count (solid: none, dashed: some), one column per optimizer. ``intervals`` by (label,
    n_distractors, overlap, ratio_CS_C) with values rise, inversion, t_peak."""
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(intervals["label"]))
    if axes is None:
        fig, axes = plt.subplots(3, len(labels), figsize=(4.6 * len(labels), 9), sharex=True, sharey="row", squeeze=False)
    axes = np.asarray(axes).reshape(3, -1)
    overlaps = sorted(intervals["overlap"].unique())
    for j, lab in enumerate(labels):
        sub = intervals[intervals["label"] == lab]
        for i, v in enumerate(("rise", "inversion", "t_peak")):
            ax = axes[i, j]
            for k, (nd, g) in enumerate(sub[sub["value"] == v].groupby("n_distractors", sort=True)):
                styles = {ov: {"color": f"C{overlaps.index(ov)}", "ls": ("-", "--", ":")[k % 3]} for ov in overlaps}
                _interval_lines(g, "ratio_CS_C", "overlap", ax, styles=styles,
                                label_fmt="cos {:g}" + (f", {nd} distractors" if nd else ""),
                                bounds=(0, steps) if v == "t_peak" else (0, None))
            if v == "t_peak":
                ax.axhline(steps, color="0.5", lw=0.6, ls=":")
                ax.set_xlabel(_PRETTY["ratio_CS_C"])
            elif v == "rise":
                n = int(sub["n"].max())
                ax.set_title(f"{lab} ({n} seed{'s' if n > 1 else ''})", fontsize=9)
    axes[0, -1].legend(fontsize=6, ncol=2, loc="upper right")
    axes[0, 0].set_ylabel("rise: peak $M_C$ - start")
    axes[1, 0].set_ylabel("inversion: peak $M_C$ - final $M_C$")
    axes[2, 0].set_ylabel(f"step of the $M_C$ peak\n({steps} = no peak; 0 = falls from the start)")
    fig = axes[0, 0].figure
    fig.tight_layout()
    return fig


def plot_regime_map(summary, x: str = "delta_C", y: str = "delta_M", ax=None):
    """The trajectory's regime (:func:`theory.sweep.regime`) on an (x, y) grid, one colour per regime."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from theory.sweep import REGIMES

    fig, ax = _fig_ax(ax, figsize=(5, 4))
    piv = summary.pivot_table(index=y, columns=x, values="regime", aggfunc="first").sort_index(ascending=False)
    codes = np.vectorize(lambda r: REGIMES.index(r) if isinstance(r, str) else np.nan, otypes=[float])(piv.to_numpy(dtype=object))
    colors = ["#3b75af", "#9ecae1", "#e6550d", "#fdae6b", "#756bb1", "#d9d9d9"]
    ax.imshow(codes, aspect="auto", cmap=ListedColormap(colors), vmin=-0.5, vmax=len(REGIMES) - 0.5)
    _grid_axes(ax, piv, x, y)
    present = sorted({int(c) for c in codes[np.isfinite(codes)]})
    ax.legend(handles=[Patch(color=colors[c], label=REGIMES[c]) for c in present], fontsize=6, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), title="$M_C$ trajectory", title_fontsize=7)
    return fig
