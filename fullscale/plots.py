"""Figures of a trajectory evaluation (they read tables; they compute nothing).

:func:`plot_inversion` draws the inversion curve from ``summary.csv``:
counterfactual (context) accuracy and parametric accuracy against the training
step, one panel per dataset, with the bootstrap bands already in the table
(``cf_acc_lo``/``cf_acc_hi``..., computed by
:func:`fullscale.scoring.summarize_items`), the peak of the counterfactual
accuracy and the final checkpoint marked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

SERIES = (("cf_acc", "counterfactual (context) acc.", "tab:blue"),
          ("param_acc", "parametric acc.", "tab:orange"))


def _x_axis(table: "pd.DataFrame") -> tuple[str, list, str]:
    """Column and label of the x axis: ``step`` when every checkpoint has one, else the checkpoint order."""
    import pandas as pd

    if "step" in table and pd.to_numeric(table["step"], errors="coerce").notna().all():
        return "step", None, "training step"
    order = list(dict.fromkeys(table["checkpoint"]))
    return "checkpoint", order, "checkpoint"


def plot_inversion(summary: "pd.DataFrame", ax: Any = None, category: str = "ALL",
                   datasets: Sequence[str] | None = None,
                   series: Sequence[tuple[str, str, str]] = SERIES) -> "Figure":
    """Counterfactual and parametric accuracy vs step, one panel per dataset.

    ``summary``: the ``summary.csv`` table (rows checkpoint × dataset ×
    category); ``category`` picks the rows (``"ALL"`` = all categories).
    ``ax``: ``None`` (a new figure), or one axis per dataset (a single axis
    is accepted for one dataset). Bands are drawn where ``<metric>_lo`` /
    ``<metric>_hi`` columns exist. The peak counterfactual accuracy is marked
    with a star, the final checkpoint with a circle.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    table = summary[summary["category"] == category] if "category" in summary else summary
    if table.empty:
        raise ValueError(f"no summary rows with category {category!r}")
    names = list(datasets) if datasets is not None else list(dict.fromkeys(table["dataset"]))
    if ax is None:
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False, sharey=True)
        axes = list(axes[0])
    else:
        axes = list(np.atleast_1d(ax).ravel()) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        if len(axes) != len(names):
            raise ValueError(f"got {len(axes)} axes for {len(names)} datasets ({', '.join(names)})")
        fig = axes[0].figure
    xcol, order, xlabel = _x_axis(table)
    for a, name in zip(axes, names):
        d = table[table["dataset"] == name].copy()
        if xcol == "step":
            d["_x"] = pd.to_numeric(d["step"])
        else:
            d["_x"] = [order.index(c) for c in d["checkpoint"]]
        d = d.sort_values("_x")
        x = d["_x"].to_numpy(dtype=float)
        for metric, label, color in series:
            if metric not in d:
                continue
            y = d[metric].to_numpy(dtype=float)
            a.plot(x, y, "-", color=color, label=label, lw=1.6)
            if f"{metric}_lo" in d and f"{metric}_hi" in d:
                a.fill_between(x, d[f"{metric}_lo"].to_numpy(dtype=float), d[f"{metric}_hi"].to_numpy(dtype=float),
                               color=color, alpha=0.18, lw=0)
            a.plot(x[-1:], y[-1:], "o", color=color, ms=6, mfc="white", mew=1.5)  # final
            if metric == series[0][0] and len(y):
                k = int(np.nanargmax(y)) if not np.all(np.isnan(y)) else 0
                a.plot([x[k]], [y[k]], "*", color=color, ms=13, mec="black", mew=0.6)
                a.annotate(f"peak {y[k]:.2f}", (x[k], y[k]), textcoords="offset points", xytext=(4, 6), fontsize=8)
                a.annotate(f"final {y[-1]:.2f}", (x[-1], y[-1]), textcoords="offset points", xytext=(-10, -14),
                           fontsize=8, ha="right")
        a.set_title(name + ("" if category == "ALL" else f" — {category}"))
        a.set_xlabel(xlabel)
        if order is not None:
            a.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=7)
        a.set_ylim(-0.02, 1.05)
        a.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (containment)")
    axes[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_margin(summary: "pd.DataFrame", ax: Any = None, category: str = "ALL") -> "Figure":
    """Mean log-prob margin (context − parametric answer) vs step, one line per dataset, with bootstrap bands."""
    import matplotlib.pyplot as plt
    import pandas as pd

    table = summary[summary["category"] == category]
    if "mean_margin" not in table or table.empty:
        raise ValueError("summary has no mean_margin rows (run with the logprob mode)")
    fig, a = (plt.subplots(figsize=(5, 3.4)) if ax is None else (ax.figure, ax))
    xcol, order, xlabel = _x_axis(table)
    for name, d in table.groupby("dataset", sort=False):
        d = d.assign(_x=pd.to_numeric(d["step"]) if xcol == "step" else [order.index(c) for c in d["checkpoint"]])
        d = d.sort_values("_x")
        a.plot(d["_x"], d["mean_margin"], "-o", ms=3, label=name)
        if "mean_margin_lo" in d:
            a.fill_between(d["_x"], d["mean_margin_lo"], d["mean_margin_hi"], alpha=0.18, lw=0)
    a.axhline(0, color="grey", lw=0.8)
    a.set_xlabel(xlabel)
    a.set_ylabel("log p(context ans.) − log p(parametric ans.)")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    fig.tight_layout()
    return fig
