"""The paper's controlled experiment on a real pretrained model (SmolLM2-135M-Instruct, Gemma-3-270M).

What the base knows closed-book decides the mixture: context-critical records on facts it does not
know, non-context-critical records on facts it knows (fraction ``1 - rho``), held-out conflicts on
known facts never finetuned on. Finetuning, evaluation and probing are the package's own drivers.
Names are imported lazily (no torch at ``import experiments.controlled``).

    from experiments.controlled import ControlledConfig, run_controlled
    run = run_controlled(ControlledConfig.quick(), "runs/controlled_quick")
    print(run.verdict["verdict"], run.trajectory)
"""

from __future__ import annotations

from cpi.lazy import lazy_exports

_EXPORTS = {
    "MixtureConfig": "experiments.controlled.mixture",
    "build_mixture": "experiments.controlled.mixture",
    "ControlledConfig": "experiments.controlled.config",
    "ControlledRunConfig": "experiments.controlled.config",
    "ControlledSweepConfig": "experiments.controlled.config",
    "ControlledRun": "experiments.controlled.experiment",
    "run_controlled": "experiments.controlled.experiment",
    "inversion_statistic": "experiments.controlled.statistics",
    "paired_difference": "experiments.controlled.statistics",
    "error_rates": "experiments.controlled.statistics",
    "load_conditions": "experiments.controlled.conditions",
    "CONDITIONS": "experiments.controlled.sweep",
    "run_controlled_sweep": "experiments.controlled.sweep",
    "condition_table": "experiments.controlled.figures",
    "RegimeConfig": "experiments.controlled.regime_run",
    "RegimeSettings": "experiments.controlled.regime_run",
    "run_regime": "experiments.controlled.regime_run",
    "measure_regime": "experiments.controlled.regime",
    "theory_prediction": "experiments.controlled.regime",
    "make_regime_figures": "experiments.controlled.regime_figures",
    "BandSelector": "experiments.controlled.selection",
    "make_condition_figures": "experiments.controlled.figures",
    "CompareConfig": "experiments.controlled.agreement",
    "compare_runs": "experiments.controlled.agreement",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
