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
    paths = make_all_figures(tmp_path, quick=True)
    names = {p.name for p in paths}
    for f in FIGURES:
        assert f"{f}.png" in names and f"{f}.pdf" in names
    assert all(p.stat().st_size > 1000 for p in paths)


def test_plot_functions_accept_axes():
    import matplotlib.pyplot as plt

    t = simulate([SimConfig(steps=20, label="a"), SimConfig(steps=20, n_CS=0, label="b")], show_progress=False)
    fig, ax = plt.subplots()
    assert plot_comparison(t, "M_C", ax=ax) is fig
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
