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


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(s.strip() for s in v.split(",") if s.strip())
    return out


def register(sub: "argparse._SubParsersAction", data_sub: "argparse._SubParsersAction") -> None:
    """Add ``finetune`` (top level) and ``score-context``, ``augment`` (``data`` group)."""
    p = sub.add_parser(
        "finetune",
        help="instruction-finetune a model (HF Trainer/Accelerate), saving checkpoint-<step>/ every N steps",
        description="Instruction finetuning with checkpoint trajectories. The config (YAML/JSON) maps onto "
        "fullscale.finetune.FinetuneConfig; every field is documented there and in docs/fullscale_finetune.md. "
        "Re-running with the same output_dir resumes from the last complete checkpoint. Multi-GPU: "
        "accelerate launch --config_file fullscale/configs/accelerate_multi_gpu_ddp.yaml -m cpi.cli finetune ...",
    )
    p.add_argument("--config", required=True, help="YAML or JSON finetuning config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set max_steps=100 --set lora.rank=16")
    p.set_defaults(func=_finetune)

    s = data_sub.add_parser(
        "score-context",
        help="context-criticality of IFT examples (loss with vs without context); filter the lowest fraction",
        description="Score every IFT example by how much its input context helps the base model predict the "
        "response. Writes scores.csv (one row per example), filtered.jsonl (examples kept after dropping the "
        "lowest --fraction of context-bearing examples), dropped_ids.txt, histogram.png and config.json into --out.",
    )
    s.add_argument("--model", help="base model folder or hub name (needed for --method loss)")
    s.add_argument("--data", required=True, help="IFT data (.jsonl/.json/.parquet, Alpaca or messages records)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--fraction", type=float, default=0.25, help="fraction of context-bearing examples to drop (0.25)")
    s.add_argument("--method", choices=["loss", "lexical"], default="loss",
                   help="loss: base-model response loss with/without context; lexical: word overlap (no model)")
    s.add_argument("--criterion", choices=["gap", "loss_without_context"], default="gap",
                   help="rank by the loss gap (default) or by the loss without context (the paper's literal rule)")
    s.add_argument("--template", default="alpaca", help="prompt template: plain, alpaca or chat")
    s.add_argument("--data-format", default="auto", choices=["auto", "alpaca", "tulu", "ultrachat"])
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--max-length", type=int, default=1024, help="tokens per example")
    s.add_argument("--max-examples", type=int, default=None, help="score only the first N examples")
    s.add_argument("--device", default=None)
    s.add_argument("--dtype", default=None)
    s.set_defaults(func=_score_context)

    a = data_sub.add_parser(
        "augment",
        help="mix entity-swapped counterfactual QA examples (from conflict sets) into IFT data",
        description="Generate counterfactual context-QA examples by swapping answers in knowledge-conflict sets "
        "(never from --exclude evaluation items, by id or by context) and mix them into --data so that they "
        "make up --fraction of the output JSONL.",
    )
    a.add_argument("--conflicts", nargs="+", required=True, metavar="NAMES_OR_FILES",
                   help="conflict sets to generate from (shipped names or JSONL files; comma-separated ok)")
    a.add_argument("--exclude", nargs="*", default=[], metavar="EVAL_NAMES_OR_FILES",
                   help="evaluation sets whose items must not be used")
    a.add_argument("--fraction", type=float, required=True, help="share of augmented examples in the output")
    a.add_argument("--data", required=True, help="IFT data to augment")
    a.add_argument("--out", required=True, help="output JSONL")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--data-format", default="auto", choices=["auto", "alpaca", "tulu", "ultrachat"])
    a.set_defaults(func=_augment)


def _finetune(args: argparse.Namespace) -> int:
    from fullscale.finetune import FinetuneConfig, FinetuneInterrupted, run_finetune

    config = FinetuneConfig.from_file(args.config).with_overrides(args.set)
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


def _check_numbers(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Positive sizes (``--batch-size`` ...) and a ``--fraction`` in [0, 1), before anything is loaded."""
    import math

    from cpi.errors import CpiError

    for name in names:
        value = getattr(args, name, None)
        if name == "fraction":
            if value is None or not (math.isfinite(value) and 0 <= value < 1):
                raise CpiError(f"--fraction: must be in [0, 1), got {value}")
        elif value is not None and value < 1:
            raise CpiError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")


def _check_data(path: str) -> None:
    """A local IFT data file that is binary or not UTF-8 gets a one-line error (Parquet is binary by design)."""
    from pathlib import Path

    from cpi.io import check_input_file

    if Path(path).exists() and Path(path).suffix != ".parquet":
        check_input_file(path, "--data")


def _score_context(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cpi.errors import CpiError
    from cpi.io import atomic_save_figure, atomic_write_text, check_out_dir, save_run
    from cpi.lock import FolderLock
    from fullscale.curation import (filter_examples, lexical_overlap_scores, plot_criticality_histogram,
                                    score_context_criticality)
    from fullscale.ift_data import check_template, load_ift_data, write_ift_jsonl

    _check_numbers(args, ("batch_size", "max_length", "max_examples", "fraction"))
    out = check_out_dir(args.out)
    check_template(args.template)
    if args.method == "loss" and not args.model:
        raise CpiError("--model is needed for --method loss (or use --method lexical)")
    _check_data(args.data)
    examples = load_ift_data(args.data, args.data_format, max_examples=args.max_examples)
    with FolderLock(out, "cpi data score-context"):
        if args.method == "loss":
            from fullscale.checkpoints import load_checkpoint

            model, tokenizer = load_checkpoint(args.model, device=args.device, dtype=args.dtype)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            scores = score_context_criticality(model, tokenizer, examples, template=args.template,
                                               batch_size=args.batch_size, max_length=args.max_length)
            criterion = args.criterion
        else:
            scores = lexical_overlap_scores(examples)
            criterion = "gap"
        ctx = scores[scores["has_context"].astype(bool)]
        if len(ctx) and ctx[criterion].isna().all():
            raise CpiError(f"--max-length {args.max_length}: no context-bearing example of {args.data} fits with its "
                           f"response ({len(ctx)} scored NaN); raise --max-length")
        kept, dropped = filter_examples(examples, scores, args.fraction, criterion=criterion, source="scores")
        write_ift_jsonl(kept, out / "filtered.jsonl")
        atomic_write_text(out / "dropped_ids.txt", "".join(f"{ex.id}\n" for ex in dropped))
        fig = plot_criticality_histogram(scores, column=criterion, fraction=args.fraction)
        atomic_save_figure(fig, out / "histogram.png", dpi=150)
        n_unscored = int(ctx[criterion].isna().sum())
        save_run(out, {**vars(args), "func": None, "criterion": criterion}, tables={"scores": scores},
                 n_examples=len(examples), n_kept=len(kept), n_dropped=len(dropped), n_unscored=n_unscored)
    unscored = f", {n_unscored} context-bearing unscored (NaN, kept)" if n_unscored else ""
    print(f"{len(examples)} examples scored; dropped {len(dropped)}, kept {len(kept)}{unscored} -> {out}")
    return 0


def _augment(args: argparse.Namespace) -> int:
    from cpi.io import check_out_file
    from fullscale.augment import augment_data
    from fullscale.ift_data import load_ift_data, write_ift_jsonl

    from cpi.errors import CpiError

    _check_numbers(args, ("fraction",))
    if not _split(args.conflicts):
        raise CpiError("--conflicts: give at least one conflict set (shipped name or JSONL file)")
    check_out_file(args.out)
    _check_data(args.data)
    examples = load_ift_data(args.data, args.data_format)
    mixed, n_aug = augment_data(examples, _split(args.conflicts), _split(args.exclude), args.fraction, args.seed)
    write_ift_jsonl(mixed, args.out)
    print(f"{len(examples)} IFT examples + {n_aug} counterfactual examples -> {args.out}")
    return 0
