"""The model organism: a small Llama-style transformer pretrained on a synthetic world of facts.

It is instruction-finetuned on a controlled mixture of context-critical and non-context-critical
data with ``fullscale.finetune``, and every checkpoint is evaluated (``fullscale.evaluate``) and
probed (``mechinterp``) on held-out knowledge conflicts, exactly as a 7B model would be.
``cpi run`` runs it end to end (the package's embedded default); ``cpi organism sweep`` sweeps
rho and the mitigations. Names are imported lazily (no torch at ``import experiments.organism``).

    from experiments.organism import OrganismConfig, run_organism
    run = run_organism(OrganismConfig.quick())   # into runs/organism_quick (the config's out)
    print(run.closed_book_recall, run.trajectory())
"""

from __future__ import annotations

from cpi.lazy import lazy_exports

_EXPORTS = {
    "WorldConfig": "experiments.organism.world",
    "build_world": "experiments.organism.world",
    "build_tokenizer": "experiments.organism.world",
    "PretrainConfig": "experiments.organism.pretrain",
    "pretrain_organism": "experiments.organism.pretrain",
    "closed_book_recall": "experiments.organism.pretrain",
    "IFTConfig": "experiments.organism.ift",
    "make_ift_records": "experiments.organism.ift",
    "make_eval_items": "experiments.organism.ift",
    "OrganismConfig": "experiments.organism.experiment",
    "OrganismRun": "experiments.organism.experiment",
    "run_organism": "experiments.organism.experiment",
    "SweepConfig": "experiments.organism.sweep",
    "run_sweep": "experiments.organism.sweep",
    "make_organism_figures": "experiments.organism.figures",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
