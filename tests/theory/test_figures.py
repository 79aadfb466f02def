"""Figures regenerate (quick mode) as PNG + PDF; plotting functions take a table and an optional axis."""

import matplotlib
import numpy as np

matplotlib.use("Agg")

from theory.config import SimConfig
from theory.figures import FIGURES, make_all_figures
from theory.plots import plot_comparison, plot_phase_diagram, plot_trajectory
from theory.simulator import simulate
from theory.sweep import comparison_configs, summarize


def test_make_all_figures_quick(tmp_path):
    import pandas as pd

    from theory.figures import TABLES

    paths = make_all_figures(tmp_path, quick=True)
    names = {p.name for p in paths}
    for f in FIGURES:
        assert f"{f}.png" in names and f"{f}.pdf" in names
    for t in TABLES:
        assert f"{t}.csv" in names
    assert all(p.stat().st_size > 1000 for p in paths)
    opt = pd.read_csv(tmp_path / "theory_optimizers.csv")
    assert {"label", "lr", "ratio_CS_C", "seed", "inversion", "t_peak", "regime"} <= set(opt.columns)
    assert opt.groupby("label")["seed"].nunique().to_dict()["SGD (batch 8)"] == 2  # stochastic: every seed
    assert opt.groupby("label")["seed"].nunique().to_dict()["GD (full batch)"] == 1  # deterministic: once
    filt = pd.read_csv(tmp_path / "theory_filtering.csv")
    assert filt[filt.filter_fraction > 0]["filter_precision"].between(0, 1).all()


def test_figure_files_are_byte_reproducible(tmp_path):
    import matplotlib.pyplot as plt

    from theory.figures import _save

    def draw():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return fig

    a = [p.read_bytes() for p in _save(draw(), tmp_path / "a", "f")]
    b = [p.read_bytes() for p in _save(draw(), tmp_path / "b", "f")]
    assert a == b and b"CreationDate" not in b[1]


def test_trajectory_panels_say_what_they_show():
    """Issue 11: the accuracy flip is annotated with how far M_C is past 0.5; every panel has a y-label;
    the gradient panel is log|.| by sign (no symlog threshold kink)."""
    import matplotlib.pyplot as plt

    t = simulate(SimConfig(), show_progress=False)
    fig = plot_trajectory(t)
    axes = fig.axes
    assert all(ax.get_ylabel() for ax in axes[:4])
    notes = [c.get_text() for c in axes[0].texts]
    k = int(np.flatnonzero(np.diff(t["cf_acc"].to_numpy()) != 0)[-1]) + 1  # the last argmax flip (step 434)
    past = abs(t["M_C"].iloc[k] - 0.5)
    assert past < 1e-3 and any(f"step {k}:" in n and f"{past:.1g} past 0.5" in n for n in notes), notes
    assert axes[3].get_yscale() == "log"
    plt.close("all")


def test_phase_diagram_no_peak_cells_and_readable_text():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    t = simulate([SimConfig(steps=40, n_CS=0, label="a"), SimConfig(steps=40, label="b")], show_progress=False)
    s = summarize(t)
    fig = plot_phase_diagram(s, "t_peak", "n_CS", "lr", cmap="magma")
    ax = fig.axes[0]
    texts = {tx.get_text(): to_rgb(tx.get_color()) for tx in ax.texts}
    assert "none" in texts and texts["none"] == (0.0, 0.0, 0.0)  # the pale "no peak" cell: black text
    assert fig.axes[1].get_ylabel()  # the colorbar is labelled
    plt.close("all")


def test_eta_figure_names_eta_min():
    import matplotlib.pyplot as plt

    from theory.plots import plot_eta_scan
    from theory.sweep import eta_scan

    fig = plot_eta_scan(eta_scan(SimConfig(), [1.0, 20.0]), 16.87)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("eta_{min}" in lab for lab in labels) and not any("eta^*" in lab for lab in labels)
    plt.close("all")


def test_plot_functions_accept_axes():
    import matplotlib.pyplot as plt

    t = simulate([SimConfig(steps=20, label="a"), SimConfig(steps=20, n_CS=0, label="b")], show_progress=False)
    fig, ax = plt.subplots()
    assert plot_comparison(t, "M_C", ax=ax) is fig
    assert ax.get_ylabel() != "M_C"  # a readable label (issue 11)
    # the comparison draws each configuration's M_C trajectory (seed mean), one line per label
    want = {lab: g.groupby("step")["M_C"].mean().to_numpy() for lab, g in t.groupby("label")}
    drawn = [line.get_ydata() for line in ax.get_lines() if len(line.get_ydata()) == 21]
    assert len(drawn) == 2 and all(any(np.allclose(d, w) for d in drawn) for w in want.values())
    one = t[t.config_id == 0]
    fig = plot_trajectory(one)
    assert len(fig.axes) >= 4 and all(a.get_xlabel() for a in fig.axes[:4])
    m_c = one.groupby("step")["M_C"].mean().to_numpy()
    assert any(np.allclose(line.get_ydata(), m_c) for a in fig.axes for line in a.get_lines()
               if len(line.get_ydata()) == len(m_c)), "the trajectory figure does not draw M_C"
    s = summarize(t)
    fig = plot_phase_diagram(s, "inversion", "n_CS", "lr")
    cells = fig.axes[0].get_images()[0].get_array()
    assert cells.shape == (s["lr"].nunique(), s["n_CS"].nunique())
    assert np.allclose(np.sort(np.asarray(cells).ravel()), np.sort(s.groupby(["lr", "n_CS"])["inversion"].mean()))
    plt.close("all")


def test_comparison_configs_are_valid():
    named = comparison_configs()
    assert len(named) >= 6 and len({c.label for c in named.values()}) == len(named)


def test_package_exports_the_contract_names():
    import theory
    from theory import simulate as sim_fn

    assert callable(theory.simulate) and callable(sim_fn) and callable(theory.make_all_figures)
    assert set(theory.__all__) >= {"SimConfig", "simulate", "make_all_figures"}
