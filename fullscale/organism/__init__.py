"""The model organism: a small Llama-style transformer pretrained on a synthetic world of facts.

It is instruction-finetuned on a controlled mixture of context-critical and non-context-critical
data with ``fullscale.finetune``, and every checkpoint is evaluated (``fullscale.evaluate``) and
probed (``mechinterp``) on held-out knowledge conflicts, exactly as a 7B model would be.
``cpi run`` runs it end to end (the package's embedded default); ``cpi organism sweep`` sweeps
rho and the mitigations. Names are imported lazily (no torch at ``import fullscale.organism``).

    from fullscale.organism import OrganismConfig, run_organism
    run = run_organism(OrganismConfig.quick(), "runs/organism_quick")
    print(run.closed_book_recall, run.trajectory())
"""

from __future__ import annotations

from cpi.lazy import lazy_exports

_EXPORTS = {
    "WorldConfig": "fullscale.organism.world",
    "build_world": "fullscale.organism.world",
    "build_tokenizer": "fullscale.organism.world",
    "PretrainConfig": "fullscale.organism.pretrain",
    "pretrain": "fullscale.organism.pretrain",
    "closed_book_recall": "fullscale.organism.pretrain",
    "IFTConfig": "fullscale.organism.ift",
    "make_ift_records": "fullscale.organism.ift",
    "make_eval_items": "fullscale.organism.ift",
    "OrganismConfig": "fullscale.organism.experiment",
    "OrganismRun": "fullscale.organism.experiment",
    "run_organism": "fullscale.organism.experiment",
    "SweepConfig": "fullscale.organism.sweep",
    "run_sweep": "fullscale.organism.sweep",
    "make_organism_figures": "fullscale.organism.figures",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
