"""Mechanistic probes of context-parametric inversion on real checkpoints (TransformerLens 4.x).

Attention mass and span-resolved value (OV) contributions at the answer position, per layer x
head, over a finetuning trajectory; head interventions; links to the theory simulator.
Names are imported lazily so ``import mechinterp`` does not import torch or transformer_lens.
The per-model probe and intervention are re-exported as ``probe_items`` and ``intervene_items``, so
``mechinterp.probe`` and ``mechinterp.intervene`` (and ``from mechinterp import probe``) are always the
modules, whatever was imported first; the runners are :func:`run_probe` (``ProbeConfig`` -> table) and
:func:`run_intervene` (``InterveneConfig`` -> tables). A probe metric is a unit (:class:`Metric`, see
:mod:`mechinterp.metrics`); :data:`METRICS` are the default units and :data:`PROBE_METRICS` the
headline per-step summaries.
"""

from __future__ import annotations

from cpi.lazy import lazy_exports

_EXPORTS = {
    "load_bridge": "mechinterp.load",
    "bridge_from_model": "mechinterp.load",
    "ProbeItem": "mechinterp.probe",
    "SPANS": "mechinterp.probe",
    "probe_items": "mechinterp.probe",
    "prepare_items": "mechinterp.probe",
    "aggregate": "mechinterp.probe",
    "targets_table": "mechinterp.probe",
    "METRICS": "mechinterp.metrics",
    "PROBE_METRICS": "mechinterp.metrics",
    "Metric": "mechinterp.metrics",
    "Column": "mechinterp.metrics",
    "Step": "mechinterp.metrics",
    "hook_name": "mechinterp.hooks",
    "ProbeConfig": "mechinterp.trajectory",
    "probe_trajectory": "mechinterp.trajectory",
    "run_probe": "mechinterp.trajectory",
    "draw_probe_figures": "mechinterp.plots",
    "read_probe_table": "mechinterp.trajectory",
    "HeadIntervention": "mechinterp.intervene",
    "intervene_items": "mechinterp.intervene",
    "InterveneConfig": "mechinterp.intervene",
    "run_intervene": "mechinterp.intervene",
    "summarize_intervention": "mechinterp.intervene",
    "LinkConfig": "mechinterp.report",
    "run_link": "mechinterp.report",
    "steps_table": "mechinterp.link",
    "theory_link_table": "mechinterp.link",
    "correlation_table": "mechinterp.link",
    "correlations": "mechinterp.link",
    "head_change_table": "mechinterp.link",
    "head_change_summary": "mechinterp.link",
    "head_table": "mechinterp.link",
    "plot_attention_change": "mechinterp.plots",
    "plot_head_heatmap": "mechinterp.plots",
    "plot_context_vs_subject": "mechinterp.plots",
    "plot_value_contributions": "mechinterp.plots",
    "plot_theory_link": "mechinterp.plots",
    "plot_correlation": "mechinterp.plots",
    "plot_head_drop_vs_value": "mechinterp.plots",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
