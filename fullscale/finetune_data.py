"""The training examples of a finetuning run: IFT data, then the filter and augmentation mitigations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cpi.errors import CpiError
from fullscale.finetune_config import FinetuneConfig

__all__ = ["prepare_examples", "tracking_items"]


def prepare_examples(config: FinetuneConfig, model: Any = None, tokenizer: Any = None,
                     out_dir: Path | None = None, is_main: bool = True, device: Any = None
                     ) -> tuple[list[Any], dict[str, Any]]:
    """Load the IFT data and apply filtering then augmentation; returns ``(examples, summary)``.

    With ``out_dir=None`` the score table of filtering is not written but returned in
    ``summary["_scores"]`` (``run_finetune`` writes it once training starts, so that a failed
    command writes nothing). Filtering with ``filter_method: loss`` and no ``filter_scores``
    scores every example with the base ``model`` here (moved to ``device`` first; in a
    multi-process launch every process scores, so prefer ``cpi data
    score-context`` once and pass its table as ``filter_scores``).
    """
    from fullscale.ift_data import load_ift_data

    examples = load_ift_data(config.data, config.data_format, config.data_split, config.max_examples)
    summary: dict[str, Any] = {"n_loaded": len(examples), "n_filtered_out": 0, "n_augmented": 0}
    if config.filter_fraction > 0:
        from fullscale.curation import filter_examples, lexical_overlap_scores, read_scores, score_context_criticality

        if config.filter_scores:
            scores = read_scores(config.filter_scores)
        elif config.filter_method == "lexical":
            scores = lexical_overlap_scores(examples)
        else:
            if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
                raise CpiError("filter_method 'loss' without filter_scores cannot run under FSDP (the base model "
                               "is not materialised on every rank yet); run `cpi data score-context` once and "
                               "set filter_scores to its scores.csv")
            if device is not None:
                model.to(device)
            scores = score_context_criticality(model, tokenizer, examples, template=config.template,
                                               max_length=config.max_seq_length)
        if is_main and out_dir is not None:
            from cpi.io import atomic_write_table

            atomic_write_table(scores, out_dir / "curation_scores.csv")
        elif out_dir is None:
            summary["_scores"] = scores  # the caller writes it (run_finetune: once training starts)
        criterion = config.filter_criterion if config.filter_method == "loss" or config.filter_scores else "gap"
        kept, dropped = filter_examples(examples, scores, config.filter_fraction, criterion=criterion,
                                        source=str(config.filter_scores or "computed scores"))
        summary["n_filtered_out"] = len(dropped)
        examples = kept
    if config.augment_fraction > 0:
        from fullscale.augment import augment_data

        exclude = list(config.augment_exclude) + (list(config.tracking.conflicts) if config.tracking else [])
        examples, n_aug = augment_data(examples, config.augment_sources, exclude, config.augment_fraction,
                                       seed=config.seed)
        summary["n_augmented"] = n_aug
    return examples, summary


def tracking_items(config: FinetuneConfig) -> list[Any]:
    import random

    from fullscale.conflicts import load_conflicts

    items = [it for src in config.tracking.conflicts for it in load_conflicts(src)]
    if len(items) > config.tracking.n_items:
        rng = random.Random(config.seed)
        items = sorted(rng.sample(items, config.tracking.n_items), key=lambda it: (it.dataset, it.id))
    return items
