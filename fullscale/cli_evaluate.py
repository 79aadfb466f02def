"""``cpi evaluate``: context reliance of every checkpoint of a finetuning run.

    cpi evaluate --checkpoints runs/alpaca --datasets CF_World_Facts,CF_Bio,CF_Quotes --out eval/alpaca
"""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction", data_sub: "argparse._SubParsersAction") -> None:
    """Add ``cpi evaluate`` (nothing in the ``data`` group)."""
    p = sub.add_parser(
        "evaluate",
        help="score every checkpoint on knowledge-conflict sets (counterfactual / parametric accuracy, log-prob margin)",
        description="Evaluate a trajectory of checkpoints on knowledge-conflict sets. Writes items.csv "
        "(checkpoint x dataset x item), summary.csv (checkpoint x dataset x category), config.json and "
        "inversion.png into --out; re-running with the same --out resumes after the last finished checkpoint. "
        "Every flag is a field of fullscale.evaluate.EvalConfig.",
    )
    from cpi.cli_config import add_config_arguments
    from fullscale.evaluate import EvalConfig

    add_config_arguments(p, EvalConfig, required=("checkpoints", "out"))
    p.set_defaults(func=_handler)


def _handler(args: argparse.Namespace) -> int:
    from cpi.cli_config import config_from_args
    from fullscale.evaluate import load_results, run_evaluate

    out = run_evaluate(config_from_args(args))
    _, summary = load_results(out)
    cols = [c for c in ("checkpoint", "step", "dataset", "n", "cf_acc", "param_acc", "mean_margin") if c in summary]
    print(summary[summary["category"] == "ALL"][cols].to_string(index=False))
    print(f"results: {out}/items.csv, {out}/summary.csv")
    return 0
