"""Full-scale experiments: knowledge-conflict sets, prompts, checkpoints, scoring, evaluation, finetuning.

Public names are loaded lazily (module-level ``__getattr__``), so ``import
fullscale`` imports neither torch nor transformers::

    from fullscale import load_conflicts, discover_checkpoints, load_checkpoint, score_logprob
    items = load_conflicts("CF_World_Facts")
    model, tok = load_checkpoint(discover_checkpoints("runs/alpaca")[0])
    table = score_logprob(model, tok, items, template="alpaca")
"""

from __future__ import annotations

from cpi.lazy import lazy_exports

# public name -> submodule that defines it
_LAZY = {
    # datasets (fullscale.conflicts)
    "ConflictItem": "fullscale.conflicts",
    "load_conflicts": "fullscale.conflicts",
    "SHIPPED_DATASETS": "fullscale.conflicts",
    "validate_file": "fullscale.conflicts",
    # prompts
    "TEMPLATES": "fullscale.prompts",
    "FormattedPrompt": "fullscale.prompts",
    "format_prompt": "fullscale.prompts",
    "format_prompts": "fullscale.prompts",
    # checkpoints
    "Checkpoint": "fullscale.checkpoints",
    "discover_checkpoints": "fullscale.checkpoints",
    "load_checkpoint": "fullscale.checkpoints",
    "resolve_device_dtype": "fullscale.checkpoints",
    # real pretrained models (the registry)
    "list_models": "fullscale.models",
    "fetch_model": "fullscale.models",
    "resolve_model": "fullscale.models",
    # scoring
    "score_logprob": "fullscale.scoring",
    "score_generation": "fullscale.scoring",
    "match_answer": "fullscale.scoring",
    "summarize_reliance": "fullscale.scoring",
    # evaluation over a trajectory
    "EvalConfig": "fullscale.evaluate",
    "run_evaluate": "fullscale.evaluate",
    "evaluate_trajectory": "fullscale.evaluate",
    "plot_inversion": "fullscale.plots",
    # finetuning
    "FinetuneConfig": "fullscale.finetune",
    "FinetuneSettings": "fullscale.finetune_config",
    "run_finetune": "fullscale.finetune",
    # IFT-data curation
    "ScoreContextConfig": "fullscale.curation",
    "run_score_context": "fullscale.curation",
    "AugmentConfig": "fullscale.augment",
    "run_augment": "fullscale.augment",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
