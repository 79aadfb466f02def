"""``cpi evaluate``: context reliance of every checkpoint of a finetuning run.

    cpi evaluate --checkpoints runs/alpaca --datasets CF_World_Facts,CF_Bio,CF_Quotes --out eval/alpaca
"""

from __future__ import annotations

import argparse


def _split(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out.extend(s.strip() for s in v.split(",") if s.strip())
    return tuple(out)


def register(sub: "argparse._SubParsersAction", data_sub: "argparse._SubParsersAction") -> None:
    """Add ``cpi evaluate`` (nothing in the ``data`` group)."""
    p = sub.add_parser(
        "evaluate",
        help="score every checkpoint on knowledge-conflict sets (counterfactual / parametric accuracy, log-prob margin)",
        description="Evaluate a trajectory of checkpoints on knowledge-conflict sets. Writes items.csv "
        "(checkpoint x dataset x item), summary.csv (checkpoint x dataset x category), config.json and "
        "inversion.png into --out; re-running with the same --out resumes after the last finished checkpoint.",
    )
    p.add_argument("--checkpoints", nargs="+", required=True, metavar="DIR_OR_LIST",
                   help="Trainer output folder (checkpoint-<step>/), model or LoRA adapter folders; "
                        "several, space- or comma-separated")
    p.add_argument("--datasets", nargs="+", default=["CF_World_Facts,CF_Bio,CF_Quotes"], metavar="NAMES_OR_FILES",
                   help="shipped set names or JSONL files (default: all three shipped sets)")
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--template", default="alpaca", choices=["plain", "alpaca", "chat"], help="prompt template")
    p.add_argument("--modes", default="generate,logprob,closed_book",
                   help="comma-separated subset of generate,logprob,closed_book")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder used when a checkpoint has none")
    p.add_argument("--max-items", type=int, default=None, help="seeded random subset of N items per dataset")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--max-length", type=int, default=None,
                   help="token budget of prompt + answer (default: the model's context length)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the confidence bands")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", action="store_true", help="do not draw inversion.png")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute checkpoints whose stored results were made with other settings")
    p.set_defaults(func=_handler)


def _handler(args: argparse.Namespace) -> int:
    from fullscale.evaluate import EvalConfig, evaluate_trajectory, load_results

    cfg = EvalConfig(
        checkpoints=_split(args.checkpoints), datasets=_split(args.datasets), out=args.out,
        template=args.template, modes=_split([args.modes]), batch_size=args.batch_size, device=args.device,
        dtype=args.dtype, tokenizer=args.tokenizer, max_items=args.max_items, max_new_tokens=args.max_new_tokens,
        max_length=args.max_length, n_boot=args.n_boot, seed=args.seed, plot=not args.no_plot,
        overwrite=args.overwrite,
    )
    out = evaluate_trajectory(cfg)
    _, summary = load_results(out)
    cols = [c for c in ("checkpoint", "step", "dataset", "n", "cf_acc", "param_acc", "mean_margin") if c in summary]
    print(summary[summary["category"] == "ALL"][cols].to_string(index=False))
    print(f"results: {out}/items.csv, {out}/summary.csv")
    return 0
