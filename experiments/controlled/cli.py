"""``cpi controlled run`` and ``cpi controlled sweep``: the paper's controlled experiment on a real model.

    cpi controlled run --quick                                  # smoke test (SmolLM2, 1 seed, 4 LoRA steps)
    cpi controlled run --set mixture.rho=1.0 --out runs/ctl_rho1
    cpi controlled run --config my.yaml --set seeds=[0,1,2]
    cpi controlled sweep --conditions rho_mid,rho_1 --out runs/controlled_sweep
    cpi controlled regime --arms inside,outside,control --out runs/regime   # the theory's prediction, before training
    cpi controlled compare runs/q32 runs/q16                    # two precisions of one config, item by item

The flags are generated from :class:`~experiments.controlled.config.ControlledRunConfig` /
:class:`~experiments.controlled.config.ControlledSweepConfig` (:mod:`cpi.cli_config`); the experiment's
own fields are top-level flags and ``--set`` keys (nested: ``mixture.rho``, ``finetune.steps``,
``evaluate.max_items``, ``knowledge.n_candidates``), and a ``--config`` file may hold either the
runner's fields or a bare experiment config. ``--quick`` starts from ``ControlledConfig.quick()``.
The run folder is resumable (stages keyed by content). Figures go to ``<out>/figures/`` unless
``--figures`` names a folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``controlled {run,sweep,regime,compare}`` to the ``cpi`` parser."""
    from cpi.cli_config import add_config_arguments
    from experiments.controlled.agreement import CompareConfig
    from experiments.controlled.config import ControlledRunConfig, ControlledSweepConfig
    from experiments.controlled.regime_run import RegimeConfig

    p = sub.add_parser("controlled", help="the controlled experiment on a real model (SmolLM2 / Gemma-3): "
                       "knowledge, mixture, finetune, evaluate, probe, verdict")
    ps = p.add_subparsers(dest="controlled_command", metavar="CONTROLLED_COMMAND", required=True)
    runners = (
        ("run", "one condition over its seeds", ControlledRunConfig, _run,
         "Score the base closed-book on real facts, build the rho mixture per seed, finetune with checkpoints, "
         "evaluate and probe every checkpoint on held-out conflicts, and print a verdict per metric (M_C, margin, "
         "containment) with a hierarchical bootstrap over seeds and items."),
        ("sweep", "several conditions (experiments/controlled/conditions.yaml)", ControlledSweepConfig, _sweep,
         "Run the named conditions (rows of the conditions file) over the base config's seeds, with one knowledge "
         "cache, and compare them paired on shared held-out items."),
        ("regime", "the theory's parameters of conditions, measured on the base before training", RegimeConfig, _regime,
         "Build each condition's mixture as the experiment builds it, measure delta_M, delta_C, m and the theory's "
         "class of every record and evaluated held-out conflict on the base, and run the simulator at each "
         "condition's measured parameters: the theory's prediction, stated before any training."),
    )
    for name, short, cls, func, description in runners:  # one shape: --quick, then the flags of the runner's config
        sp = ps.add_parser(name, help=short, description=description)
        _quick(sp)
        add_config_arguments(sp, cls, inline="experiment",
                             config_help=f"{cls.__name__} or ControlledConfig as YAML/JSON (instead of the defaults)")
        sp.set_defaults(func=func)
    c = ps.add_parser("compare", help="agreement of two runs of one config in two precisions",
                      description="Compare two controlled run folders of the same config but dtype, item by item: "
                      "the share of items whose outcome differs per checkpoint, max/mean |margin| and |M_C| "
                      "differences, whether the verdicts are equal and the rise/fall intervals overlap, and "
                      "the paired difference B - A at the last step.")
    c.add_argument("run_a", nargs="?", metavar="A", help="first run folder (the reference; or --a)")
    c.add_argument("run_b", nargs="?", metavar="B", help="second run folder (or --b)")
    add_config_arguments(c, CompareConfig)
    c.set_defaults(func=_compare)


def _quick(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="start from ControlledConfig.quick(), the few-minute smoke "
                   "test (not a field; flags and --set apply on top; ignored with --config)")


def runner_config(args: argparse.Namespace, cls: type):
    """The runner config of a command line: defaults (``--quick``: the quick experiment) < ``--config`` <
    flags < ``--set``; ``out`` filled in when not given."""
    from cpi.cli_config import config_from_args, flag_given
    from experiments.controlled.config import ControlledConfig

    quick = args.quick and not flag_given(args, "config")
    cfg = config_from_args(args, base=cls(experiment=ControlledConfig.quick()) if quick else None)
    name = {"ControlledRunConfig": "controlled", "RegimeConfig": "regime"}.get(cls.__name__, "controlled_sweep")
    return cfg if cfg.out else cfg.replace(out=f"runs/{name}_quick" if args.quick else f"runs/{name}")


def knowledge_lines(run) -> list[str]:
    """The base's closed-book known rate per conflict set, with its interval."""
    r = run.rates[run.rates["category"] == "ALL"]
    return [f"closed-book known rate, {row.dataset}: {row.known_rate:.1%} [{row.known_rate_lo:.1%}, "
            f"{row.known_rate_hi:.1%}] of {int(row.n)} facts (chance {row.chance:.1%})" for _, row in r.iterrows()]


def trajectory_line(run) -> str:
    """M_C, containment and the share of outputs with neither answer by step, over every seed x item."""
    cols = [c for c in ("m_c", "cf_correct", "neither") if c in run.items.columns]
    t = run.items.groupby("step")[cols].mean()
    return "step: " + "/".join({"m_c": "M_C", "cf_correct": "contains context answer", "neither": "neither answer"}[c]
                               for c in cols) + " over all seeds x items  " + "  ".join(
        f"{s}: " + "/".join(f"{v[c]:.0%}" for c in cols) for s, v in t.iterrows())


def comparison_lines(comparison) -> list[str]:
    """Per comparison and metric: the paired difference at the last shared checkpoint, and the earlier
    checkpoints whose interval excludes 0."""
    from experiments.controlled.statistics import METRICS, SHARE_METRICS

    lines = []
    if comparison is None or not len(comparison):
        return lines
    for (comp, metric), g in comparison.groupby(["comparison", "metric"], sort=False):
        last = g[g["last"]].iloc[0]
        scale, unit = (100.0, " pts") if metric in SHARE_METRICS else (1.0, "")
        pair = (f"paired on {int(last.n_pairs)} seed x item units" if last.paired
                else f"UNPAIRED, {last.n_a} vs {last.n_b} units")
        p = "" if last.p_greater is None or last.p_greater != last.p_greater else f", seed-level p(> 0) = {last.p_greater:.2f}"
        others = [f"step {int(r.step)}: {scale * r['diff']:+.2f}{unit} [{scale * r.lo:+.2f}{unit}, {scale * r.hi:+.2f}{unit}]"
                  for _, r in g[~g["last"]].iterrows() if r.lo > 0 or r.hi < 0]
        lines.append(f"{comp}, {METRICS.get(metric, metric)}, step {int(last.step)}: {scale * last['diff']:+.2f}{unit} "
                     f"[{scale * last.lo:+.2f}{unit}, {scale * last.hi:+.2f}{unit}] (95% hierarchical bootstrap, {pair}{p}; "
                     f"the paper predicts > 0)" + (f"; earlier, interval off 0 at {'; '.join(others)}" if others else ""))
    return lines


def verdict_lines(run, prefix: str = "") -> list[str]:
    """One line per metric's verdict."""
    from experiments.controlled.statistics import verdict_line

    return [prefix + verdict_line(stat) for stat in run.verdicts.values()]


def summary_lines(run) -> list[str]:
    """What ``cpi controlled run`` prints: knowledge, mixture, trajectory and verdicts, stage times."""
    lines = [f"run folder: {run.out}"] + knowledge_lines(run)
    c = run.counts.iloc[0]
    lines.append(f"mixture (seed {int(c.seed)}): {int(c.C)} context-critical, {int(c.CS)} non-context-critical, "
                 f"{int(c.CF)} counterfactual records; {int(c.heldout)} held-out conflicts, {int(c.evaluated)} evaluated")
    lines.append(trajectory_line(run))
    lines += verdict_lines(run)
    for _, row in run.timings.iterrows():
        lines.append(f"  stage {row.stage:<14} {row.wall_s:7.1f} s   peak RSS {row.peak_rss_mib:7.0f} MiB")
    return lines


def _run(args: argparse.Namespace) -> int:
    from cpi.io import check_out_dir
    from cpi.lock import FolderLock
    from experiments.controlled.config import ControlledRunConfig
    from experiments.controlled.experiment import run_controlled
    from experiments.controlled.figures import make_condition_figures

    cfg = runner_config(args, ControlledRunConfig)
    out = check_out_dir(cfg.out)
    with FolderLock(out, "cpi controlled run"):
        run = run_controlled(cfg.experiment, out)
    paths = make_condition_figures(run, Path(cfg.figures) if cfg.figures else out / "figures", prefix=cfg.prefix)
    print("\n".join(summary_lines(run)))
    print(f"figures: {', '.join(str(p) for p in paths if p.suffix == '.png')}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from cpi.io import check_out_dir
    from cpi.lock import FolderLock
    from experiments.controlled.conditions import condition_lines
    from experiments.controlled.config import ControlledConfig, ControlledSweepConfig
    from experiments.controlled.figures import make_condition_figures, plot_sweep_panels, save_figure
    from experiments.controlled.sweep import run_controlled_sweep

    cfg = runner_config(args, ControlledSweepConfig)
    out = check_out_dir(cfg.out)
    reference = ControlledConfig.quick() if args.quick else ControlledConfig()
    with FolderLock(out, "cpi controlled sweep"):
        res = run_controlled_sweep(cfg.experiment, cfg.conditions, out, cfg.conditions_file, reference)
    figures = Path(cfg.figures) if cfg.figures else out / "figures"
    paths = []
    for line in condition_lines(res.composed):
        print(line)
    for name, run in res.runs.items():
        paths += make_condition_figures(run, figures, prefix=f"controlled_{name}")
        print("\n".join(verdict_lines(run, f"{name}: ")))
    paths += save_figure(plot_sweep_panels(res.table), figures, "controlled_sweep")
    for line in comparison_lines(res.comparison):
        print(line)
    print(f"figures: {len(paths)} files in {figures}/")
    return 0


def _regime(args: argparse.Namespace) -> int:
    from cpi.io import check_out_dir
    from cpi.lock import FolderLock
    from experiments.controlled.regime_figures import make_regime_figures
    from experiments.controlled.regime_run import RegimeConfig, run_regime

    cfg = runner_config(args, RegimeConfig)
    out = check_out_dir(cfg.out)
    with FolderLock(out, "cpi controlled regime"):
        res = run_regime(cfg)
    paths = make_regime_figures(res.table, out, prediction=res.prediction)
    print(res.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\n".join(res.lines))
    print(f"tables and {', '.join(str(p) for p in paths)} in {out}/")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from cpi.cli_config import config_from_args
    from experiments.controlled.agreement import agreement_lines, run_compare

    cfg = config_from_args(args)
    given = {k: v for k, v in (("a", args.run_a), ("b", args.run_b)) if v}
    ag = run_compare(cfg.replace(**given) if given else cfg)
    print("\n".join(agreement_lines(ag)))
    return 0
