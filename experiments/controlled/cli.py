"""``cpi controlled run`` and ``cpi controlled sweep``: the paper's controlled experiment on a real model.

    cpi controlled run --quick                                  # smoke test (SmolLM2, 1 seed, 4 LoRA steps)
    cpi controlled run --set mixture.rho=1.0 --out runs/ctl_rho1
    cpi controlled run --config my.yaml --set seeds=[0,1,2]
    cpi controlled sweep --conditions rho_mid,rho_1 --out runs/controlled_sweep

Every field of :class:`~experiments.controlled.experiment.ControlledConfig` is set with ``--set``
(nested: ``mixture.rho``, ``finetune.steps``, ``evaluate.max_items``, ``knowledge.n_candidates``) or a
``--config`` file; the run folder is resumable (stages keyed by content). Figures go to
``<out>/figures/`` unless ``--figures`` names a folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``controlled {run,sweep}`` to the ``cpi`` parser."""
    p = sub.add_parser("controlled", help="the controlled experiment on a real model (SmolLM2 / Gemma-3): "
                       "knowledge, mixture, finetune, evaluate, probe, verdict")
    ps = p.add_subparsers(dest="controlled_command", metavar="CONTROLLED_COMMAND", required=True)
    r = ps.add_parser("run", help="one condition over its seeds",
                      description="Score the base closed-book on real facts, build the rho mixture per seed, "
                      "finetune with checkpoints, evaluate and probe every checkpoint on held-out conflicts, "
                      "and print a verdict with a bootstrap interval over seeds x items.")
    _common(r)
    r.add_argument("--prefix", default="controlled", help="figure file names start with this (default controlled)")
    r.set_defaults(func=_run)
    s = ps.add_parser("sweep", help="several conditions (rho low/mid/1.0, filter, augment, qk_only)")
    _common(s)
    s.add_argument("--conditions", default="rho_low,rho_mid,rho_1,filter,augment,qk_only",
                   help="comma-separated condition names (default: all)")
    s.set_defaults(func=_sweep)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the few-minute smoke-test form (ControlledConfig.quick)")
    p.add_argument("--out", default=None, help="run folder (default runs/controlled[_quick]); resumable")
    p.add_argument("--figures", default=None, help="folder for the figures (default: <out>/figures/)")
    p.add_argument("--config", default=None, help="ControlledConfig as YAML/JSON (instead of the defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ControlledConfig field (nested: mixture.rho=0.5, finetune.steps=40)")


def _config(args: argparse.Namespace):
    from experiments.controlled.experiment import ControlledConfig

    cfg = ControlledConfig.from_file(args.config) if args.config else (
        ControlledConfig.quick() if args.quick else ControlledConfig())
    return cfg.with_overrides(args.set) if args.set else cfg


def _out(args: argparse.Namespace, name: str) -> Path:
    return Path(args.out or (f"runs/{name}_quick" if args.quick else f"runs/{name}"))


def knowledge_lines(run) -> list[str]:
    """The base's closed-book known rate per conflict set, with its interval."""
    r = run.rates[run.rates["category"] == "ALL"]
    return [f"closed-book known rate, {row.dataset}: {row.known_rate:.1%} [{row.known_rate_lo:.1%}, "
            f"{row.known_rate_hi:.1%}] of {int(row.n)} facts (chance {row.chance:.1%})" for _, row in r.iterrows()]


def trajectory_line(run) -> str:
    """Counterfactual / parametric accuracy by step over every seed x held-out item of the run."""
    t = run.items.groupby("step")[["cf_correct", "param_correct"]].mean()
    return "step: cf_acc / param_acc over all seeds x items  " + "  ".join(
        f"{s}: {v.cf_correct:.0%}/{v.param_correct:.0%}" for s, v in t.iterrows())


def comparison_lines(comparison) -> list[str]:
    """One line per row of :func:`~experiments.controlled.sweep.comparison_table`."""
    lines = []
    for _, row in comparison.iterrows():
        scale, unit, what = ((1.0, "", "log-prob margin (nats)") if row.metric == "margin"
                             else (100.0, "%", "counterfactual accuracy"))
        lines.append(f"{row.comparison} at the last checkpoint, {what}: {scale * row['diff']:+.2f}{unit} "
                     f"[{scale * row.lo:+.2f}, {scale * row.hi:+.2f}] (95% bootstrap; the paper predicts > 0; "
                     f"{row.n_a} vs {row.n_b} seed x item units)")
    return lines


def summary_lines(run) -> list[str]:
    """What ``cpi controlled run`` prints: knowledge, mixture, trajectory and verdict, stage times."""
    from experiments.controlled.experiment import verdict_line

    lines = [f"run folder: {run.out}"] + knowledge_lines(run)
    c = run.counts.iloc[0]
    lines.append(f"mixture (seed {int(c.seed)}): {int(c.C)} context-critical, {int(c.CS)} non-context-critical, "
                 f"{int(c.CF)} counterfactual records; {int(c.heldout)} held-out conflicts, {int(c.evaluated)} evaluated")
    lines.append(trajectory_line(run))
    lines.append(verdict_line(run.verdict))
    for _, row in run.timings.iterrows():
        lines.append(f"  stage {row.stage:<14} {row.wall_s:7.1f} s   peak RSS {row.peak_rss_mib:7.0f} MiB")
    return lines


def _run(args: argparse.Namespace) -> int:
    from experiments.controlled.experiment import run_controlled
    from experiments.controlled.figures import make_condition_figures

    from cpi.io import check_out_dir
    from cpi.lock import FolderLock

    cfg = _config(args)
    out = check_out_dir(_out(args, "controlled"))
    with FolderLock(out, "cpi controlled run"):
        run = run_controlled(cfg, out)
    paths = make_condition_figures(run, Path(args.figures) if args.figures else out / "figures", prefix=args.prefix)
    print("\n".join(summary_lines(run)))
    print(f"figures: {', '.join(str(p) for p in paths if p.suffix == '.png')}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from experiments.controlled.experiment import verdict_line
    from experiments.controlled.figures import make_condition_figures, plot_sweep_panels, save_figure
    from experiments.controlled.sweep import run_controlled_sweep

    from cpi.io import check_out_dir
    from cpi.lock import FolderLock

    cfg = _config(args)
    out = check_out_dir(_out(args, "controlled_sweep"))
    names = [c.strip() for c in args.conditions.split(",") if c.strip()]
    with FolderLock(out, "cpi controlled sweep"):
        res = run_controlled_sweep(cfg, names, out)
    figures = Path(args.figures) if args.figures else out / "figures"
    paths = []
    for name, run in res.runs.items():
        paths += make_condition_figures(run, figures, prefix=f"controlled_{name}")
        print(f"{name}: {verdict_line(run.verdict)}")
    paths += save_figure(plot_sweep_panels(res.table), figures, "controlled_sweep")
    for line in comparison_lines(res.comparison):
        print(line)
    print(f"figures: {len(paths)} files in {figures}/")
    return 0
