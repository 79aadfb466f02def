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
    r.add_argument("--probe", required=True, type=Path, help="a `cpi probe` output folder or its probe.csv")
    r.add_argument("--theory", default=None,
                   help="theory.simulate table (CSV), or 'default' to simulate the default SimConfig")
    r.add_argument("--eval-summary", default=None, type=Path, help="summary.csv from `cpi evaluate`")
    r.add_argument("--dataset-name", default=None, help="restrict to this dataset (default: average of all)")
    r.add_argument("--category", default="ALL")
    r.add_argument("--top-k", type=int, default=10)
    r.add_argument("--out", required=True, type=Path)
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
    import pandas as pd

    from cpi.errors import CpiError
    from cpi.io import check_out_dir, save_run
    from mechinterp import link, plots
    from mechinterp.trajectory import read_probe_table

    check_out_dir(args.out)
    table = read_probe_table(args.probe)
    ev = None
    if args.eval_summary is not None:
        if not args.eval_summary.is_file():
            raise CpiError(f"{args.eval_summary}: evaluation summary not found")
        ev = pd.read_csv(args.eval_summary, keep_default_na=False, na_values=[""])
    tables: dict[str, pd.DataFrame] = {}
    figs = {}
    corr = link.correlation_table(table, ev, dataset=args.dataset_name, category=args.category)
    tables["correlation"] = corr
    tables["correlations"] = link.correlations(corr)
    figs["correlation.png"] = plots.plot_correlation(corr)
    try:
        heads = link.head_change_table(table, dataset=args.dataset_name, category=args.category)
        tables["head_change"] = heads
        tables["head_change_summary"] = link.head_change_summary(heads, top_k=args.top_k)
        figs["attention_change_heatmap.png"] = plots.plot_attention_change(heads)
        figs["head_drop_vs_value.png"] = plots.plot_head_drop_vs_value(heads)
    except CpiError as exc:
        print(f"skipping head-change tables: {exc}")
    if args.theory is not None:
        if args.theory == "default":
            from theory import SimConfig, simulate

            th = simulate(SimConfig(), show_progress=False)
        else:
            path = Path(args.theory)
            if not path.is_file():
                raise CpiError(f"{path}: theory table not found")
            th = pd.read_csv(path)
        lt = link.theory_link_table(th, table, ev, dataset=args.dataset_name, category=args.category)
        tables["theory_link"] = lt
        figs["theory_link.png"] = plots.plot_theory_link(lt)
    save_run(args.out, {"probe": str(args.probe), "theory": args.theory, "eval_summary": str(args.eval_summary),
                        "dataset": args.dataset_name, "category": args.category, "top_k": args.top_k}, tables=tables)
    for name, fig in figs.items():
        plots.save_figure(fig, args.out / name)
    print(f"wrote {args.out} ({', '.join(list(tables) + list(figs))})")
    return 0
