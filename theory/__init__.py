"""Simulator and symbolic analysis of the one-layer attention model of
context-parametric inversion (Goyal et al., ICLR 2025, Section 5 / App. B).

Quick start::

    import theory
    table = theory.simulate(theory.SimConfig())          # tidy: config cols, seed, step, metrics
    theory.plot_trajectory(table).savefig("traj.png")
    theory.run_simulation(theory.SimulationRun(out="runs/sim"))   # the runner: table + config.json + figures

Heavy modules (torch, sympy, matplotlib) load on first use of the names below.
"""

from __future__ import annotations

from cpi.lazy import lazy_exports
from theory.config import SimConfig

__all__ = [
    "SimConfig",
    "SimulationRun",
    "SweepRun",
    "run_simulation",
    "run_sweep",
    "simulate",
    "make_all_figures",
    "plot_trajectory",
    "plot_phase_diagram",
    "summarize",
    "default_sweep_configs",
    "find_eta_star",
]

# public name -> submodule that defines it (imported on first use)
_LAZY = {
    "simulate": "theory.simulator",
    "run_simulation": "theory.run",
    "run_sweep": "theory.run",
    "SimulationRun": "theory.run",
    "SweepRun": "theory.run",
    "make_all_figures": "theory.figures",
    "plot_trajectory": "theory.plots",
    "plot_phase_diagram": "theory.plots",
    "summarize": "theory.sweep",
    "default_sweep_configs": "theory.sweep",
    "find_eta_star": "theory.symbolic",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
