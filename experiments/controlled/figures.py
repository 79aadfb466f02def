"""Tables and figures of the controlled experiment: a condition's trajectory (mean over seeds with
intervals), its probe, its theory overlay, and a sweep's conditions side by side.

Computing and plotting are separate: :func:`condition_table` makes the tidy per-step table, the
``plot_*`` functions take a table and an optional axis and return the figure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpi.io import atomic_save_figure
from mechinterp.metrics import PROBE_METRICS  # probe columns (mechinterp.steps_table) summarised over seeds

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: per-item columns of the evaluation -> metric names of :func:`condition_table`
ITEM_METRICS = {"m_c": "mean_m_c", "cf_correct": "cf_acc", "param_correct": "param_acc", "neither": "neither_rate",
                "margin": "mean_margin"}


def condition_table(items: "pd.DataFrame", probe_steps: "pd.DataFrame | None" = None, n_boot: int = 1000,
                    seed: int = 0) -> "pd.DataFrame":
    """Tidy ``step, metric, mean, lo, hi, n, interval`` rows of one condition.

    Evaluation metrics (``mean_m_c``, ``cf_acc``, ``param_acc``, ``neither_rate``, ``mean_margin``): mean
    over seed x item units at each step, 95 % hierarchical bootstrap interval (seeds, then items within
    seed: :func:`~experiments.controlled.statistics.interval`; ``interval = "bootstrap seed x item"``). Probe metrics
    (attention mass and value contribution of the context and question spans, mean over layers x
    heads): mean over seeds, ``lo``/``hi`` the lowest and highest seed (``interval = "seed range"``).
    """
    import pandas as pd

    import numpy as np

    from experiments.controlled.statistics import interval

    rows = []
    for col, name in ITEM_METRICS.items():
        if col not in items.columns:
            continue
        for step, g in items.groupby("step", sort=True):
            v = g[col].astype(float)
            lo, hi = interval(v.to_numpy(), np.unique(g["seed"].to_numpy(), return_inverse=True)[1], n_boot,
                              seed, 0.95)
            rows.append({"step": int(step), "metric": name, "mean": float(v.mean()), "lo": lo, "hi": hi,
                         "n": len(v), "interval": "bootstrap seed x item"})
    if probe_steps is not None and len(probe_steps):
        for name in PROBE_METRICS:
            if name not in probe_steps.columns:
                continue
            for step, g in probe_steps.groupby("step", sort=True):
                v = g[name].astype(float)
                rows.append({"step": int(step), "metric": name, "mean": float(v.mean()), "lo": float(v.min()),
                             "hi": float(v.max()), "n": len(v), "interval": "seed range"})
    return pd.DataFrame(rows, columns=["step", "metric", "mean", "lo", "hi", "n", "interval"])


def _ax(ax: Any, figsize: tuple[float, float] = (5.2, 3.6)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def step_axis(ax: Any, steps: Any) -> None:
    """The x axis of a trajectory: linear with integer ticks when the checkpoints are evenly spaced; on a
    log scale (``symlog``, linear below the first checkpoint so that the base, step 0, stays on it) with a
    tick at every checkpoint when their spacing grows (``finetune.save_schedule: log``)."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    steps = np.unique(np.asarray(steps, dtype=int))
    gaps = np.diff(steps)
    if len(gaps) >= 3 and gaps.max() >= 4 * gaps.min():
        ax.set_xscale("symlog", linthresh=float(steps[steps > 0].min()))
        ax.set_xticks(steps, [str(s) for s in steps], fontsize=7)
        ax.minorticks_off()
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _band(ax: Any, t: "pd.DataFrame", label: str, color: Any = None) -> None:
    step_axis(ax, t["step"])
    t = t.sort_values("step")
    line, = ax.plot(t["step"], t["mean"], marker="o", ms=3, label=label, color=color)
    ax.fill_between(t["step"], t["lo"], t["hi"], alpha=0.2, color=line.get_color(), linewidth=0)


def plot_accuracy(table: "pd.DataFrame", ax: Any = None, title: str = "") -> "Figure":
    """M_C, counterfactual and parametric containment and the share with neither answer on the held-out
    conflicts against the finetuning step (mean over seed x item, 95 % hierarchical bootstrap band) from
    a :func:`condition_table`."""
    fig, ax = _ax(ax)
    for metric, label in (("mean_m_c", "M_C = p_ctx / (p_ctx + p_mem)"), ("cf_acc", "counterfactual (context answer)"),
                          ("param_acc", "parametric (memory)"), ("neither_rate", "neither answer")):
        t = table[table["metric"] == metric]
        if len(t):
            _band(ax, t, label)
    n = table.loc[table["metric"] == "cf_acc", "n"]
    ax.set_xlabel("finetuning step (0 = base)")
    ax.set_ylabel("share / M_C on held-out conflicts")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or f"held-out conflicts ({int(n.max()) if len(n) else 0} seed x item units)", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_attention(table: "pd.DataFrame", ax: Any = None, title: str = "") -> "Figure":
    """Attention mass on the context and on the question (mean over layers x heads; seed range) against
    the step, from a :func:`condition_table`."""
    fig, ax = _ax(ax)
    for metric, label in (("attn_context", "context"), ("attn_question", "question")):
        t = table[table["metric"] == metric]
        if len(t):
            _band(ax, t, label)
    ax.set_xlabel("finetuning step (0 = base)")
    ax.set_ylabel("attention mass at the answer position")
    ax.set_title(title or "probe: attention (mean over layers x heads; band = seed range)", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    return fig


#: axis labels of the metrics of :func:`condition_table`
METRIC_LABELS = {"mean_m_c": "M_C = p_ctx / (p_ctx + p_mem)", "cf_acc": "counterfactual accuracy",
                 "param_acc": "parametric accuracy", "neither_rate": "share of outputs with neither answer",
                 "mean_margin": "log-prob margin, context - memory (nats)",
                 "attn_context": "attention to the context (mean over layers x heads)",
                 "attn_question": "attention to the question (mean over layers x heads)"}


def plot_sweep(table: "pd.DataFrame", ax: Any = None, metric: str = "cf_acc") -> "Figure":
    """``metric`` of every condition of a sweep (``condition`` column + :func:`condition_table` columns)."""
    fig, ax = _ax(ax, (6.0, 4.0))
    rows = table[table["metric"] == metric]
    for cond, g in rows.groupby("condition", sort=False):
        _band(ax, g, str(cond))
    ax.set_xlabel("finetuning step (0 = base)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric), fontsize=8)
    band = rows["interval"].iloc[0] if len(rows) else ""
    ax.set_title(f"mean, band = {'95 % bootstrap, seeds then items' if band.startswith('bootstrap') else band}",
                 fontsize=8)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_sweep_panels(table: "pd.DataFrame",
                      metrics: tuple[str, ...] = ("mean_m_c", "cf_acc", "mean_margin", "attn_context")) -> "Figure":
    """One :func:`plot_sweep` panel per metric of ``metrics`` that the sweep's table has (side by side):
    counterfactual accuracy saturates early, the margin and attention show what still moves."""
    import matplotlib.pyplot as plt

    present = [m for m in metrics if (table["metric"] == m).any()]
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.8), layout="constrained",
                             squeeze=False)
    for ax, metric in zip(axes[0], present):
        plot_sweep(table, ax, metric)
    for ax in axes[0][1:]:
        ax.get_legend().remove()
    fig.suptitle("conditions of the controlled experiment", fontsize=9)
    return fig


def save_figure(fig: "Figure", out: Path, name: str) -> list[Path]:
    """``out/name.png`` and ``.pdf`` (fixed metadata), then close the figure."""
    import matplotlib.pyplot as plt

    paths = [atomic_save_figure(fig, out / f"{name}.{ext}", dpi=150) for ext in ("png", "pdf")]
    plt.close(fig)
    return paths


def make_condition_figures(run: Any, out_dir: str | Path, prefix: str = "controlled",
                           theory: Any = None) -> list[Path]:
    """The figures of one :class:`~experiments.controlled.experiment.ControlledRun` into ``out_dir``:
    ``<prefix>_trajectory`` (accuracy + attention), ``<prefix>_theory_overlay`` (probe and evaluation
    over the theory's trajectory, normalised steps). ``theory``: the :class:`theory.SimConfig` at this
    condition's measured parameters (the main job's regime stage); without it the overlay draws the
    simulator's default parameters and its title says they are not this run's."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    table = condition_table(run.items, run.probe_steps, n_boot=run.config.evaluate.n_boot)
    has_probe = run.probe_steps is not None and len(run.probe_steps)
    fig, axes = plt.subplots(1, 2 if has_probe else 1, figsize=(10.5 if has_probe else 5.2, 3.8),
                             layout="constrained", squeeze=False)
    plot_accuracy(table, axes[0, 0])
    if has_probe:
        plot_attention(table, axes[0, 1])
    m = run.config.mixture
    fig.suptitle(f"{Path(run.config.model).name}: rho={m.rho:g}, augment={m.augment_fraction:g}, "
                 f"{run.config.finetune.method}, filter={run.config.finetune.filter_fraction:g}; "
                 f"{run.verdict.get('metric', '')}: {run.verdict.get('verdict', '')}", fontsize=9)
    paths = save_figure(fig, out, f"{prefix}_trajectory")
    if has_probe:
        from mechinterp.link import theory_link_table
        from mechinterp.plots import plot_theory_link
        from theory import SimConfig, simulate

        sim = theory if theory is not None else SimConfig(steps=300)
        theory_table = simulate(sim, seeds=(0,), show_progress=False)
        summary = run.trajectory.assign(category="ALL")
        link = theory_link_table(theory_table, run.probe, summary.groupby(["step", "category"], as_index=False)
                                 [["cf_acc"]].mean())
        fig = plot_theory_link(link)
        fig.axes[0].set_title(f"theory at this run's measured parameters (delta_C {sim.delta_C:.2f}, delta_M "
                              f"{sim.delta_M:.2f}, n_C {sim.n_C}, n_CS {sim.n_CS})" if theory is not None else
                              "theory at the simulator's DEFAULT parameters (not measured on this run)", fontsize=8)
        paths += save_figure(fig, out, f"{prefix}_theory_overlay")
    return paths


__all__ = ["METRIC_LABELS", "condition_table", "make_condition_figures", "plot_accuracy", "plot_attention", "plot_sweep",
           "plot_sweep_panels", "save_figure", "step_axis"]
