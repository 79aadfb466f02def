"""Figures of the regime measurement (:mod:`.regime`): each arm's records on the theory's phase plane.

Plotting only: the tables come from :func:`~experiments.controlled.regime.run_regime`
(``regime.csv``) and :func:`~experiments.controlled.regime.theory_prediction` (``prediction.csv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cpi.io import atomic_save_figure

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

#: marker per record kind (held-out conflicts as crosses)
KIND_STYLE = {"C": ("o", "tab:blue"), "CS": ("s", "tab:orange"), "CF": ("^", "tab:green"), "PC": ("v", "tab:red"),
              "heldout": ("x", "0.35")}


def plot_regime_plane(table: "pd.DataFrame", arms: Sequence[str] | None = None, prediction: "pd.DataFrame | None" = None,
                      n_candidates: int = 8) -> "Figure":
    """One panel per arm: every measured record (and held-out conflict) at (delta_C, delta_M), marked by
    kind; the theory's regime ``delta_M > 2 delta_C`` shaded, the twice-chance line ``delta_M = 2/K``
    (below it a record counts as context-critical) dashed; the panel title carries the class counts and,
    with ``prediction``, the theory's predicted shape."""
    import matplotlib.pyplot as plt
    import numpy as np

    arms = list(arms) if arms is not None else list(dict.fromkeys(table["arm"]))
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.6), squeeze=False, sharey=True)
    pred = prediction.set_index("arm") if prediction is not None else None
    x = np.linspace(0, 0.5, 50)
    for ax, arm in zip(axes[0], arms):
        g = table[table["arm"] == arm]
        ax.fill_between(x, 2 * x, 1.0, color="tab:orange", alpha=0.12, lw=0, label="$\\delta_M > 2\\delta_C$ (inside)")
        ax.axhline(2.0 / n_candidates, color="0.5", ls="--", lw=0.8, label="$\\delta_M = 2/K$")
        for kind, (marker, color) in KIND_STYLE.items():
            k = g[g["kind"] == kind]
            if len(k):
                ax.scatter(k["delta_c"], k["delta_m"], marker=marker, s=14, color=color, alpha=0.6,
                           label=f"{kind} ({len(k)})")
        rec = g[g["source"] == "record"]
        counts = ", ".join(f"{(rec['theory_class'] == c).sum()} {c}" for c in ("C", "C+S inside", "C+S outside"))
        title = f"{arm}\n{counts}"
        if pred is not None and arm in pred.index:
            title += f"\ntheory: {pred.loc[arm, 'prediction']}"
        ax.set_title(title, fontsize=7)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("$\\delta_C$ (passage, nonce subject)")
        ax.legend(fontsize=6, loc="lower right")
    axes[0][0].set_ylabel("$\\delta_M$ (closed book)")
    fig.tight_layout()
    return fig


def make_regime_figures(table: "pd.DataFrame", out_dir: str | Path, prediction: "pd.DataFrame | None" = None,
                        **kwargs: Any) -> list[Path]:
    """Write ``regime_plane.png`` to ``out_dir``; returns the paths written."""
    import matplotlib.pyplot as plt

    fig = plot_regime_plane(table, prediction=prediction, **kwargs)
    path = Path(out_dir) / "regime_plane.png"
    try:
        atomic_save_figure(fig, path)
    finally:
        plt.close(fig)
    return [path]


__all__ = ["KIND_STYLE", "make_regime_figures", "plot_regime_plane"]
