"""``cpi finetune``, ``cpi data score-context`` and ``cpi data augment``.

    cpi finetune --config fullscale/configs/finetune_example.yaml --set max_steps=200
    accelerate launch --config_file fullscale/configs/accelerate_multi_gpu_ddp.yaml -m cpi.cli finetune --config run.yaml
    cpi data score-context --model meta-llama/Llama-2-7b-hf --data alpaca.jsonl --out curation/alpaca
    cpi data augment --conflicts CF_Bio --exclude CF_World_Facts --fraction 0.1 --data alpaca.jsonl --out alpaca_aug.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys

from cpi.cli_config import add_config_arguments, config_from_args
from fullscale.augment import AugmentConfig, run_augment
from fullscale.curation import ScoreContextConfig, run_score_context
from fullscale.finetune import FinetuneConfig, FinetuneInterrupted, run_finetune


def register(sub: "argparse._SubParsersAction", data_sub: "argparse._SubParsersAction") -> None:
    """Add ``finetune`` (top level) and ``score-context``, ``augment`` (``data`` group)."""
    p = sub.add_parser(
        "finetune",
        help="instruction-finetune a model (HF Trainer/Accelerate), saving checkpoint-<step>/ every N steps",
        description="Instruction finetuning with checkpoint trajectories. The config (YAML/JSON) maps onto "
        "fullscale.finetune.FinetuneConfig; every field is documented there and in docs/fullscale_finetune.md, "
        "and every scalar field is also a flag (--max-steps 200 = --set max_steps=200). "
        "Re-running with the same output_dir resumes from the last complete checkpoint. Multi-GPU: "
        "accelerate launch --config_file fullscale/configs/accelerate_multi_gpu_ddp.yaml -m cpi.cli finetune ...",
    )
    add_config_arguments(p, FinetuneConfig, config_help="YAML or JSON finetuning config (FinetuneConfig fields)")
    p.set_defaults(func=_finetune)

    s = data_sub.add_parser(
        "score-context",
        help="context-criticality of IFT examples (loss with vs without context); filter the lowest fraction",
        description="Score every IFT example by how much its input context helps the base model predict the "
        "response. Writes scores.csv (one row per example), filtered.jsonl (examples kept after dropping the "
        "lowest --fraction of context-bearing examples), dropped_ids.txt, histogram.png and config.json into --out.",
    )
    add_config_arguments(s, ScoreContextConfig, required=("data", "out"))
    s.set_defaults(func=_score_context)

    a = data_sub.add_parser(
        "augment",
        help="mix entity-swapped counterfactual QA examples (from conflict sets) into IFT data",
        description="Generate counterfactual context-QA examples by swapping answers in knowledge-conflict sets "
        "(never from --exclude evaluation items, by id or by context) and mix them into --data so that they "
        "make up --fraction of the output JSONL.",
    )
    add_config_arguments(a, AugmentConfig, required=("conflicts", "fraction", "data", "out"))
    a.set_defaults(func=_augment)


def _finetune(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    main_process = os.environ.get("RANK", "0") == "0"  # torchrun / accelerate launch start one per GPU
    try:
        out = run_finetune(config)
    except FinetuneInterrupted as exc:
        from cpi.errors import EXIT_INTERRUPTED

        if main_process:
            print(f"cpi: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        _end_process_group()
    if main_process:
        print(out)
    return 0


def _end_process_group() -> None:
    """Tear down the torch.distributed process group that a multi-process launch set up.

    Exiting with a live gloo/NCCL group lets its worker threads be destroyed during interpreter
    shutdown, which can abort a rank ("terminate called without an active exception") after a
    successful run; destroying it explicitly is the documented way to exit.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _score_context(args: argparse.Namespace) -> int:
    res = run_score_context(config_from_args(args))
    unscored = f", {res.n_unscored} context-bearing unscored (NaN, kept)" if res.n_unscored else ""
    print(f"{len(res.scores)} examples scored; dropped {res.n_dropped}, kept {res.n_kept}{unscored} -> {res.out}")
    return 0


def _augment(args: argparse.Namespace) -> int:
    out, n_examples, n_aug = run_augment(config_from_args(args))
    print(f"{n_examples} IFT examples + {n_aug} counterfactual examples -> {out}")
    return 0
