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
    p.add_argument("--checkpoints", required=True,
                   help="trainer output dir (checkpoint-<step>/), a model folder, or a comma-separated list")
    p.add_argument("--dataset", required=True, help="shipped conflict set name (e.g. CF_World_Facts) or a JSONL file")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    _common(p)
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for checkpoints that lack one")
    p.add_argument("--compatibility-mode", action="store_true",
                   help="use TransformerLens enable_compatibility_mode() weights (default: raw HF weights)")
    p.add_argument("--per-item", action="store_true", help="also write items/<checkpoint>.csv (per-item rows)")
    p.add_argument("--no-figures", action="store_true", help="do not draw figures")
    p.set_defaults(func=_probe)

    q = sub.add_parser("probe-intervene", help="scale/ablate heads' attention to the context; measure the answer",
                       description="Scale or ablate chosen heads' attention to a span (mode attention: "
                                   "renormalised; mode value: the span's value contribution only) at the answer "
                                   "position, and measure the change in counterfactual accuracy and logit diff.")
    q.add_argument("--checkpoint", required=True, help="one model folder (or LoRA adapter folder)")
    q.add_argument("--dataset", required=True, help="shipped conflict set name or a JSONL file")
    q.add_argument("--heads", required=True, help="LAYER.HEAD list, e.g. '10.3,12.*' or 'all'")
    q.add_argument("--scale", type=float, default=0.0, help="factor on the span's attention (0 = ablate)")
    q.add_argument("--mode", choices=("attention", "value"), default="attention")
    q.add_argument("--span", choices=("context", "question", "bos", "other"), default="context")
    q.add_argument("--out", required=True, type=Path)
    _common(q)
    q.add_argument("--tokenizer", default=None)
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


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--template", default="alpaca", help="prompt template: plain, alpaca or chat (default alpaca)")
    p.add_argument("--max-items", type=int, default=None, help="use only the first N items")
    p.add_argument("--max-length", type=int, default=None, help="cut contexts from the left to fit N tokens")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)")


def _save_fig(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from cpi.io import atomic_save_figure

    atomic_save_figure(fig, path)
    plt.close(fig)  # type: ignore[arg-type]
    return path


def draw_probe_figures(table: "object", out_dir: Path) -> list[Path]:
    """Fig. 3b, per-span value contributions and (with ≥2 checkpoints) the Δ-attention heatmap."""
    from cpi.errors import CpiError
    from mechinterp import link, plots

    out_dir.mkdir(parents=True, exist_ok=True)
    steps = link.steps_table(table)  # type: ignore[arg-type]
    paths = [_save_fig(plots.plot_context_vs_subject(steps), out_dir / "attention_context_vs_subject.png"),
             _save_fig(plots.plot_value_contributions(steps), out_dir / "value_contributions.png")]
    try:
        heads = link.head_change_table(table)  # type: ignore[arg-type]
    except CpiError:
        return paths
    paths.append(_save_fig(plots.plot_attention_change(heads), out_dir / "attention_change_heatmap.png"))
    return paths


def _probe(args: argparse.Namespace) -> int:
    from mechinterp.trajectory import ProbeConfig, probe_trajectory

    cfg = ProbeConfig(checkpoints=args.checkpoints, dataset=args.dataset, template=args.template,
                      max_items=args.max_items, max_length=args.max_length, batch_size=args.batch_size,
                      device=args.device, dtype=args.dtype, tokenizer=args.tokenizer,
                      compatibility_mode=args.compatibility_mode, per_item=args.per_item)
    table = probe_trajectory(cfg.checkpoints, cfg.dataset, args.out, config=cfg)
    print(f"wrote {args.out / 'probe.csv'} ({len(table)} rows, {table['step'].nunique()} checkpoints)")
    if not args.no_figures:
        for p in draw_probe_figures(table, args.out / "figures"):
            print(f"wrote {p}")
    return 0


def _intervene(args: argparse.Namespace) -> int:
    from cpi.io import save_run
    from mechinterp.intervene import HeadIntervention, intervene, parse_heads, summarize_intervention
    from mechinterp.load import load_bridge
    from mechinterp.trajectory import load_items

    items = load_items(args.dataset, args.max_items)
    bridge, tok = load_bridge(args.checkpoint, device=args.device, dtype=args.dtype, tokenizer=args.tokenizer)
    heads = parse_heads(args.heads, int(bridge.cfg.n_layers), int(bridge.cfg.n_heads))
    iv = HeadIntervention(heads=heads, scale=args.scale, mode=args.mode, span=args.span)
    df = intervene(bridge, tok, items, iv, template=args.template, batch_size=args.batch_size,
                   max_length=args.max_length)
    summary = summarize_intervention(df)
    save_run(args.out, {"checkpoint": str(args.checkpoint), "dataset": args.dataset, "template": args.template,
                        "max_items": args.max_items, **iv.to_dict()},
             tables={"intervention_items": df, "intervention_summary": summary},
             weights=getattr(bridge, "cpi_weights", "raw_hf"))
    allrow = summary[summary["category"] == "ALL"]
    for _, row in allrow.iterrows():
        print(f"{row['dataset']}: cf_acc {row['cf_acc_base']:.3f} -> {row['cf_acc_int']:.3f}, "
              f"logit diff {row['logit_diff_base']:.3f} -> {row['logit_diff_int']:.3f} (n={row['n']})")
    print(f"wrote {args.out}")
    return 0


def _link(args: argparse.Namespace) -> int:
    import pandas as pd

    from cpi.errors import CpiError
    from cpi.io import save_run
    from mechinterp import link, plots
    from mechinterp.trajectory import read_probe_table

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
        _save_fig(fig, args.out / name)
    print(f"wrote {args.out} ({', '.join(list(tables) + list(figs))})")
    return 0
