"""Figures regenerate (quick mode) as PNG + PDF; plotting functions take a table and an optional axis."""

import subprocess
import sys

import matplotlib

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
    assert plot_trajectory(t[t.config_id == 0]) is not None
    s = summarize(t)
    assert plot_phase_diagram(s, "inversion", "n_CS", "lr") is not None
    plt.close("all")


def test_comparison_configs_are_valid():
    named = comparison_configs()
    assert len(named) >= 6 and len({c.label for c in named.values()}) == len(named)


def test_import_theory_is_light():
    code = "import sys, theory; theory.SimConfig(); print('transformer_lens' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_package_exports_the_contract_names():
    import theory
    from theory import simulate as sim_fn

    assert callable(theory.simulate) and callable(sim_fn) and callable(theory.make_all_figures)
    assert set(theory.__all__) >= {"SimConfig", "simulate", "make_all_figures"}
