"""Experiments built on every package: ``theory``, ``fullscale`` and ``mechinterp``.

``experiments.main_job`` is the README's main job (``cpi run``): the theory figures, then
``experiments.controlled``, the paper's controlled experiment on a real pretrained model, for one
rho and the control. ``experiments.organism`` is the model organism (``cpi organism ...``): a small
Llama-style model pretrained on a synthetic world, instruction-finetuned, evaluated and probed
with the same code a user runs on a 7B checkpoint. This package sits on top of the dependency
graph ``cpi <- theory, fullscale <- mechinterp <- experiments``; nothing below imports it.
Names are imported lazily (no torch at ``import experiments``)::

    from experiments import OrganismConfig, run_organism
    run = run_organism(OrganismConfig.quick())   # into runs/organism_quick (the config's out)
"""

from __future__ import annotations

from cpi.lazy import lazy_exports

_EXPORTS = {
    "MainConfig": "experiments.main_job",
    "run_main": "experiments.main_job",
    "ControlledConfig": "experiments.controlled.experiment",
    "run_controlled": "experiments.controlled.experiment",
    "OrganismConfig": "experiments.organism.experiment",
    "run_organism": "experiments.organism.experiment",
    "SweepConfig": "experiments.organism.sweep",
    "run_sweep": "experiments.organism.sweep",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
