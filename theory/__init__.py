"""Simulator and symbolic analysis of the one-layer attention model of
context-parametric inversion (Goyal et al., ICLR 2025, Section 5 / App. B).

Quick start::

    import theory
    table = theory.simulate(theory.SimConfig())          # tidy: config cols, seed, step, metrics
    theory.plot_trajectory(table).savefig("traj.png")

Heavy modules (torch, sympy, matplotlib) load on first use of the names below.
"""

from __future__ import annotations

from typing import Any

from theory.config import SimConfig

__all__ = [
    "SimConfig",
    "simulate",
    "make_all_figures",
    "plot_trajectory",
    "plot_phase_diagram",
    "summarize",
    "default_sweep_configs",
    "find_eta_star",
]

_LAZY = {
    "simulate": ("theory.simulator", "simulate"),
    "make_all_figures": ("theory.figures", "make_all_figures"),
    "plot_trajectory": ("theory.plots", "plot_trajectory"),
    "plot_phase_diagram": ("theory.plots", "plot_phase_diagram"),
    "summarize": ("theory.sweep", "summarize"),
    "default_sweep_configs": ("theory.sweep", "default_sweep_configs"),
    "find_eta_star": ("theory.symbolic", "find_eta_star"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'theory' has no attribute {name!r}")
