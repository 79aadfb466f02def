"""``cpi organism run [--quick]`` and ``cpi organism sweep``: the model organism (no downloads).

    cpi organism run --figures figures   # the organism end to end, regenerating its committed figures
    cpi organism run --quick             # < 2 minutes (smaller world, fewer steps) -> runs/organism_quick/
    cpi organism run --set ift.rho=0.5 --out runs/rho05
    cpi organism sweep --out runs/organism_sweep

A run's figures go under its ``--out`` folder (``<out>/figures/``) unless ``--figures`` names a
folder, so a quick run never overwrites the committed full-size figures in ``figures/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``organism {run,sweep}`` to the ``cpi`` parser."""
    org = sub.add_parser("organism", help="the model organism: one run or the rho / mitigation sweep")
    org_sub = org.add_subparsers(dest="organism_command", metavar="ORGANISM_COMMAND", required=True)
    r = org_sub.add_parser("run", help="one organism run (no theory figures)")
    _common(r)
    r.add_argument("--figures", default=None, help="also write the organism figures here")
    r.add_argument("--no-probe", action="store_true", help="skip the probe stage")
    r.set_defaults(func=_organism_run)
    s = org_sub.add_parser("sweep", help="sweep rho (incl. the rho=1 control) and the mitigations over seeds")
    s.add_argument("--out", default="runs/organism_sweep", help="sweep folder (resumable)")
    s.add_argument("--figures", default=None, help="folder for the sweep figures (default: <out>/figures/)")
    s.add_argument("--quick", action="store_true", help="the quick organism in every cell")
    s.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    s.add_argument("--rhos", default="0.1,0.3,0.5,1.0", help="comma-separated rho values")
    s.add_argument("--no-mitigations", action="store_true", help="only the rho sweep")
    _config_flags(s, "the base OrganismConfig as YAML/JSON (instead of the defaults)")
    s.set_defaults(func=_sweep)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the < 2 minute variant (smaller world, fewer steps)")
    p.add_argument("--out", default=None, help="run folder, the config's `out` (default runs/organism or "
                   "runs/organism_quick); resumable")
    _config_flags(p, "OrganismConfig as YAML/JSON (instead of the defaults)")


def _config_flags(p: argparse.ArgumentParser, config_help: str) -> None:
    """``--config`` and ``--set`` from the one generator (:mod:`cpi.cli_config`). OrganismConfig's
    module imports torch, so its fields get no flags of their own: building the ``cpi`` parser
    must not import it; ``--set`` reaches every field (nested: ift.rho=0.5, pretrain.steps=3000)."""
    from cpi.cli_config import add_config_arguments

    add_config_arguments(p, "experiments.organism.experiment:OrganismConfig", config_help=config_help)


def parse_list(text: str, kind: type, flag: str) -> tuple:
    """``"0,1,2"`` -> ``(0, 1, 2)``; a one-line :class:`~cpi.errors.CpiError` naming ``flag`` for a value
    that is not a finite ``kind``, or for no value at all."""
    import math

    from cpi.errors import CpiError

    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            raise CpiError(f"{flag}: {part!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise CpiError(f"{flag}: {part!r} is not a finite number")
        out.append(value)
    if not out:
        raise CpiError(f"{flag}: give at least one value (comma-separated)")
    return tuple(out)


def _config(args: argparse.Namespace):
    """The OrganismConfig: defaults (or ``quick()``) < ``--config`` < ``--out`` < ``--set``."""
    from cpi.cli_config import config_from_args, flag_given, set_assignments
    from experiments.organism.experiment import OrganismConfig

    quick = args.quick and not flag_given(args, "config")
    cfg = config_from_args(args, base=OrganismConfig.quick() if quick else None)
    out_set = any(a.split("=", 1)[0].strip() == "out" for a in set_assignments(args))
    return cfg.replace(out=args.out) if getattr(args, "out", None) and not out_set else cfg


def _summary_lines(run) -> list[str]:
    traj = run.trajectory()
    lines = [
        f"run folder: {run.out}",
        f"closed-book recall of known facts after pretraining: {run.closed_book_recall:.1%} "
        f"({len(run.recall)} facts)",
    ]
    if len(run.reading) and run.config.pretrain.qa_fraction > 0:
        r = run.base_reading()
        lines.append(f"base model reading its context (pretraining QA format): new subjects {r['novel_context']:.1%}; "
                     f"conflicts: context {r['conflict_context']:.1%}, memory {r['conflict_memory']:.1%}")
    elif len(run.reading):
        lines.append("base model reading its context: not meaningful (qa_fraction = 0: the base never saw the QA format)")
    if run.pretrain_tokens_per_s:
        lines.append(f"pretraining speed: {run.pretrain_tokens_per_s:,.0f} tokens/s")
    if len(traj) and "cf_acc" in traj:
        first, last = traj.iloc[0], traj.iloc[-1]
        peak = traj.loc[traj["cf_acc"].idxmax()]
        lines.append(
            f"counterfactual accuracy (context answer): step {int(first.step)} {first.cf_acc:.1%} -> "
            f"peak {peak.cf_acc:.1%} at step {int(peak.step)} -> step {int(last.step)} {last.cf_acc:.1%}"
        )
        if "param_acc" in traj:
            lines.append(f"parametric accuracy: {first.param_acc:.1%} -> {last.param_acc:.1%}")
        lines.append(f"verdict: {inversion_verdict(traj, n_items=int(run.eval_summary['n'].max()))}")
    for _, row in run.timings.iterrows():
        lines.append(f"  stage {row.stage:<14} {row.wall_s:7.1f} s   peak RSS {row.peak_rss_mib:7.0f} MiB")
    return lines


def inversion_verdict(traj, n_items: int, min_effect: float = 0.1) -> str:
    """A cautious one-line reading of a cf_acc trajectory (no significance test is claimed).

    "rise then fall" needs the peak to be an interior step, at least ``min_effect`` above the
    start and above the end, and at least 3 items' worth of accuracy each way.
    """
    first, last = traj.iloc[0], traj.iloc[-1]
    peak = traj.loc[traj["cf_acc"].idxmax()]
    rise, drop = peak.cf_acc - first.cf_acc, peak.cf_acc - last.cf_acc
    need = max(min_effect, 3.0 / max(n_items, 1))
    if peak.step not in (first.step, last.step) and rise >= need and drop >= need:
        return f"rise then fall: +{rise:.1%} then -{drop:.1%} (n={n_items} items)"
    return f"no clear rise-then-fall (rise {rise:+.1%}, drop from peak {drop:+.1%}, n={n_items} items)"


def _organism_run(args: argparse.Namespace) -> int:
    from experiments.organism.experiment import run_organism

    from cpi.io import check_out_dir
    from cpi.lock import FolderLock

    cfg = _config(args)
    out = check_out_dir(cfg.out)
    if args.figures:
        check_out_dir(args.figures, "--figures")
    with FolderLock(out, "cpi organism run"):
        run = run_organism(cfg, probe=not args.no_probe)
    if args.figures:
        from experiments.organism.figures import make_organism_figures

        make_organism_figures(run, Path(args.figures))
    print("\n".join(_summary_lines(run)))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from cpi.io import check_out_dir
    from cpi.lock import FolderLock
    from experiments.organism.sweep import SweepConfig, plot_sweep, run_sweep

    base = _config(args)
    scfg = SweepConfig(
        seeds=parse_list(args.seeds, int, "--seeds"),
        rhos=parse_list(args.rhos, float, "--rhos"),
        mitigations=not args.no_mitigations,
    )
    out = check_out_dir(args.out)
    if args.figures:
        check_out_dir(args.figures, "--figures")
    with FolderLock(out, "cpi organism sweep"):
        table = run_sweep(base, scfg, out)
    paths = plot_sweep(table, Path(args.figures) if args.figures else Path(args.out) / "figures")
    print(table.groupby(["variant", "step"])["cf_acc"].mean().unstack("step").round(3).to_string())
    print(f"figures: {', '.join(str(p) for p in paths)}")
    return 0
