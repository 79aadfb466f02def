"""``cpi`` subcommands of the ``mechinterp`` package (registered by :mod:`cpi.cli`).

* ``cpi probe --checkpoints DIR_OR_LIST --dataset NAME_OR_FILE --out DIR`` — attention and value
  probes over a trajectory (resumable), ``probe.csv`` + ``config.json`` + figures.
* ``cpi probe-intervene --checkpoint DIR --dataset NAME_OR_FILE --heads 10.3,12.* --out DIR`` —
  scale/ablate heads' attention (or value path) on the context span; per-item and summary tables.
* ``cpi probe-link --probe DIR [--theory CSV|default] [--eval-summary CSV] --out DIR`` — theory
  link, correlation and head-change tables and figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this package's subcommands to the top-level ``cpi`` parser."""
    p = sub.add_parser("probe", help="attention/value probes over finetuning checkpoints (TransformerLens)",
                       description="Probe attention mass and value (OV) contributions at the answer position for "
                                   "every layer x head x span, checkpoint by checkpoint (resumable).")
    from cpi.cli_config import add_config_arguments
    from mechinterp.trajectory import ProbeConfig

    add_config_arguments(p, ProbeConfig, required=("checkpoints", "dataset", "out"))
    p.set_defaults(func=_probe)

    q = sub.add_parser("probe-intervene", help="scale/ablate heads' attention to the context; measure the answer",
                       description="Scale or ablate chosen heads' attention to a span (mode attention: "
                                   "renormalised; mode value: the span's value contribution only) at the answer "
                                   "position, and measure the change in counterfactual accuracy and logit diff.")
    from mechinterp.intervene import InterveneConfig

    add_config_arguments(q, InterveneConfig, required=("checkpoint", "dataset", "heads", "out"))
    q.set_defaults(func=_intervene)

    r = sub.add_parser("probe-link", help="link a probe trajectory to the theory and the evaluation",
                       description="Theory-vs-measured trajectory, attention-vs-accuracy correlation, and per-head "
                                   "attention change vs context-path value tables and figures.")
    from mechinterp.report import LinkConfig

    add_config_arguments(r, LinkConfig, required=("probe", "out"))
    r.set_defaults(func=_link)


def _probe(args: argparse.Namespace) -> int:
    from cpi.cli_config import config_from_args
    from mechinterp.trajectory import run_probe

    cfg = config_from_args(args)
    table = run_probe(cfg)
    out = Path(cfg.out)
    print(f"wrote {out / 'probe.csv'} ({len(table)} rows, {table['step'].nunique()} checkpoints)")
    if cfg.figures:
        print(f"wrote figures into {out / 'figures'}")
    return 0


def _intervene(args: argparse.Namespace) -> int:
    from cpi.cli_config import config_from_args
    from mechinterp.intervene import run_intervene

    cfg = config_from_args(args)
    _, summary = run_intervene(cfg)
    allrow = summary[summary["category"] == "ALL"]
    for _, row in allrow.iterrows():
        print(f"{row['dataset']}: cf_acc {row['cf_acc_base']:.3f} -> {row['cf_acc_int']:.3f} "
              f"(change 95% CI [{row['delta_cf_acc_lo']:+.3f}, {row['delta_cf_acc_hi']:+.3f}]), "
              f"logit diff {row['logit_diff_base']:.3f} -> {row['logit_diff_int']:.3f} "
              f"(change 95% CI [{row['delta_logit_diff_lo']:+.3f}, {row['delta_logit_diff_hi']:+.3f}]) (n={row['n']})")
    print(f"wrote {cfg.out}")
    return 0


def _link(args: argparse.Namespace) -> int:
    from cpi.cli_config import config_from_args
    from mechinterp.report import run_link

    cfg = config_from_args(args)
    tables = run_link(cfg)
    print(f"wrote {cfg.out} ({', '.join(tables)} tables and their figures)")
    return 0
