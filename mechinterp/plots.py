"""Figures for the probes. Each takes a ready table (from :mod:`mechinterp.link`) and an optional
matplotlib axis, draws, and returns the Figure. Nothing here computes.

| function | table | shows |
|---|---|---|
| :func:`plot_attention_change` | ``head_change_table`` | layer × head heatmap of Δ attention-to-context |
| :func:`plot_head_heatmap` | ``head_table`` | layer × head heatmap at one checkpoint (attention to context, per-head contribution) |
| :func:`plot_context_vs_subject` | ``steps_table`` | layer-averaged attention on context vs subject over steps (paper Fig. 3b) |
| :func:`plot_value_contributions` | ``steps_table`` | per-span value contributions to the logit difference over steps |
| :func:`plot_theory_link` | ``theory_link_table`` | theory vs measured trajectories on a normalised step axis |
| :func:`plot_correlation` | ``correlation_table`` | per checkpoint attention-to-context vs counterfactual accuracy |
| :func:`plot_head_drop_vs_value` | ``head_change_table`` | per head: attention drop vs context-path value contribution |

:func:`draw_probe_figures` writes the standard set of a ``cpi probe`` run (PNG files) from its table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure


def _ax(ax: Any, figsize: tuple[float, float] = (5.0, 3.6)) -> tuple["Figure", Any]:
    """The caller's axis, or a new figure whose layout engine keeps labels inside the canvas."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _need(table: "pd.DataFrame", cols: set[str], what: str) -> None:
    missing = cols - set(table.columns)
    if missing:
        raise CpiError(f"{what}: table lacks columns {sorted(missing)}")


def plot_attention_change(head_table: "pd.DataFrame", ax: Any = None, column: str = "delta_attn_context") -> "Figure":
    """Heatmap (layer rows × head columns) of ``column`` (default Δ attention-to-context between
    ``from_step`` and ``to_step``), diverging colour map centred at 0."""
    import numpy as np

    _need(head_table, {"layer", "head", column}, "plot_attention_change")
    grid = head_table.pivot(index="layer", columns="head", values=column).sort_index()
    fig, ax = _ax(ax, (5.5, 4.0))
    lim = float(np.nanmax(np.abs(grid.to_numpy()))) or 1.0
    im = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    steps = ""
    if {"from_step", "to_step"} <= set(head_table.columns):
        steps = f" (step {head_table['from_step'].iloc[0]} → {head_table['to_step'].iloc[0]})"
    ax.set_title(f"Δ attention to context{steps}" if column == "delta_attn_context" else column + steps)
    fig.colorbar(im, ax=ax, shrink=0.85)
    return fig


_HEATMAP_TITLES = {
    "attn_context": ("attention to context", "viridis"),
    "attn_question": ("attention to question", "viridis"),
    "value_total": ("per-head contribution to\nlogit diff (ctx − param)", "RdBu_r"),
    "value_context": ("context-path contribution to\nlogit diff (ctx − param)", "RdBu_r"),
}


def plot_head_heatmap(head_table: "pd.DataFrame", column: str = "attn_context", ax: Any = None) -> "Figure":
    """Heatmap (layer rows × head columns) of ``column`` of :func:`mechinterp.link.head_table` at one
    checkpoint: masses on a sequential colour map from 0, contributions on a diverging one centred
    at 0. The title names the quantity, the step and the item count."""
    import numpy as np

    _need(head_table, {"layer", "head", column}, "plot_head_heatmap")
    grid = head_table.pivot(index="layer", columns="head", values=column).sort_index()
    values = grid.to_numpy(dtype=float)
    title, cmap = _HEATMAP_TITLES.get(column, (column, "RdBu_r"))
    n_layers, n_heads = values.shape
    fig, ax = _ax(ax, (min(max(2.2 + 0.45 * n_heads, 4.6), 9.0), min(max(1.8 + 0.2 * n_layers, 3.2), 8.0)))
    if cmap == "viridis":
        im = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=max(float(np.nanmax(values)), 1e-12), aspect="auto",
                       origin="lower")
    else:
        lim = float(np.nanmax(np.abs(values))) or 1.0
        im = ax.imshow(values, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    ax.set_xticks(range(n_heads), [str(h) for h in grid.columns])
    step_y = max(1, n_layers // 10)
    ax.set_yticks(range(0, n_layers, step_y), [str(l) for l in grid.index[::step_y]])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    extra = []
    if "step" in head_table.columns:
        extra.append(f"step {head_table['step'].iloc[0]}")
    if "n" in head_table.columns and int(head_table["n"].iloc[0]) > 0:
        extra.append(f"n = {int(head_table['n'].iloc[0])} items")
    ax.set_title(title + (f"\n({', '.join(extra)})" if extra else ""), fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.85)
    return fig


def plot_context_vs_subject(steps: "pd.DataFrame", ax: Any = None) -> "Figure":
    """Layer- and head-averaged attention mass at the answer position on the context and on the
    subject/question over finetuning steps (the paper's Fig. 3b)."""
    _need(steps, {"step", "attn_context", "attn_question"}, "plot_context_vs_subject")
    fig, ax = _ax(ax)
    ax.plot(steps["step"], steps["attn_context"], "o-", label="context", color="tab:blue")
    ax.plot(steps["step"], steps["attn_question"], "s-", label="subject / question", color="tab:orange")
    ax.set_xlabel("finetuning step")
    ax.set_ylabel("mean attention mass (layers × heads)")
    ax.set_title("Attention at the answer position")
    ax.legend(frameon=False)
    return fig


def plot_value_contributions(steps: "pd.DataFrame", ax: Any = None) -> "Figure":
    """Summed per-span value (OV) contributions to logit(context) − logit(parametric) over steps,
    with the MLP total and the real logit difference for scale."""
    _need(steps, {"step", "value_context", "value_question"}, "plot_value_contributions")
    fig, ax = _ax(ax)
    for col, label, style in (("value_context", "heads ← context", "o-"), ("value_question", "heads ← subject", "s-"),
                              ("value_bos", "heads ← BOS", "^-"), ("value_other", "heads ← other", "v-"),
                              ("mlp", "MLPs", "d--"), ("logit_diff", "total (real)", "k*-")):
        if col in steps.columns:
            ax.plot(steps["step"], steps[col], style, label=label, ms=4)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("finetuning step")
    ax.set_ylabel("contribution to logit diff (ctx − param)")
    ax.set_title("Where the answer is written from")
    ax.legend(frameon=False, fontsize=7)
    return fig


def plot_theory_link(table: "pd.DataFrame", ax: Any = None) -> "Figure":
    """Theory (dashed) and measured (solid) trajectories on the normalised step axis. Each curve is
    min-max normalised (``value_norm``) so that shapes, not scales, are compared: rise then fall."""
    _need(table, {"source", "step_norm", "metric", "value_norm"}, "plot_theory_link")
    fig, ax = _ax(ax, (6.0, 3.8))
    styles = {"theory": "--", "probe": "-", "eval": ":"}
    colors = {"attn_context": "tab:blue", "attn_subject": "tab:orange", "M_C": "tab:green", "cf_acc": "tab:red",
              "cf_top1": "tab:purple", "value_context": "tab:cyan", "value_subject": "tab:brown"}
    show = {"theory": ("attn_context", "attn_subject", "M_C"), "probe": ("attn_context", "attn_subject"),
            "eval": ("cf_acc",)}
    for (source, metric), g in table.groupby(["source", "metric"], sort=False):
        if metric not in show.get(source, ()):
            continue
        g = g.sort_values("step_norm")
        ax.plot(g["step_norm"], g["value_norm"], styles.get(source, "-"), color=colors.get(metric, None),
                label=f"{source}: {metric}", marker="o" if source != "theory" else None, ms=3)
    ax.set_xlabel("normalised step (first → last)")
    ax.set_ylabel("min-max normalised value")
    ax.set_title("Theory vs measured trajectory")
    ax.legend(frameon=False, fontsize=7)
    return fig


def plot_correlation(corr: "pd.DataFrame", ax: Any = None, x: str = "attn_context", y: str = "cf_acc") -> "Figure":
    """Per checkpoint: ``x`` (layer-averaged attention to context) against ``y`` (counterfactual
    accuracy), points labelled by step, Pearson r in the title."""
    _need(corr, {x, y, "step"}, "plot_correlation")
    fig, ax = _ax(ax)
    ax.scatter(corr[x], corr[y], c=corr["step"], cmap="viridis")
    for _, row in corr.iterrows():
        ax.annotate(str(int(row["step"])), (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    r = corr[x].corr(corr[y]) if len(corr) >= 3 else float("nan")
    src = corr["cf_acc_source"].iloc[0] if "cf_acc_source" in corr.columns and len(corr) else ""
    ax.set_xlabel("attention to context (layer × head mean)" if x == "attn_context" else x)
    ax.set_ylabel(f"counterfactual accuracy ({src})" if y == "cf_acc" else y)
    ax.set_title(f"per checkpoint, Pearson r = {r:.2f}")
    return fig


def plot_head_drop_vs_value(head_table: "pd.DataFrame", ax: Any = None) -> "Figure":
    """Per head: attention-to-context change against the head's context-path value contribution at
    the start step. Heads bottom-right/left carrying large |value| answer the question whether the
    heads that stop looking at the context are those that wrote the context answer."""
    _need(head_table, {"delta_attn_context", "value_context_from"}, "plot_head_drop_vs_value")
    fig, ax = _ax(ax)
    ax.scatter(head_table["delta_attn_context"], head_table["value_context_from"], s=12, alpha=0.7)
    ax.axvline(0, color="grey", lw=0.6)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("Δ attention to context")
    ax.set_ylabel("context-path value contribution (start)")
    ax.set_title("Heads: attention change vs context value")
    return fig


def save_figure(fig: "Figure", path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    from cpi.io import atomic_save_figure

    atomic_save_figure(fig, path)
    plt.close(fig)
    return path


def draw_probe_figures(table: "pd.DataFrame", out_dir: str | Path) -> list[Path]:
    """Layer x head heat maps of attention-to-context and per-head contribution at the last checkpoint,
    Fig. 3b, per-span value contributions and (with ≥2 checkpoints) the Δ-attention heatmap."""
    from mechinterp import link

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = link.steps_table(table)
    last = link.head_table(table)
    paths = [save_figure(plot_head_heatmap(last, "attn_context"), out_dir / "attention_context_heatmap.png"),
             save_figure(plot_head_heatmap(last, "value_total"), out_dir / "head_contribution_heatmap.png"),
             save_figure(plot_context_vs_subject(steps), out_dir / "attention_context_vs_subject.png"),
             save_figure(plot_value_contributions(steps), out_dir / "value_contributions.png")]
    try:
        heads = link.head_change_table(table)
    except CpiError:
        return paths
    paths.append(save_figure(plot_attention_change(heads), out_dir / "attention_change_heatmap.png"))
    return paths
