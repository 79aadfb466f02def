"""``cpi theory simulate|sweep|prove|figures`` (registered by :mod:`cpi.cli`).

Heavy imports (torch, sympy, matplotlib) happen inside the handlers. Every
result is computed in memory first and written only once it is complete, each
file atomically, so a bad config, a non-finite loss or an interruption never
leaves a half-written ``--out`` folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cpi.errors import CpiError


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this package's subcommands to the top-level ``cpi`` parser."""
    p = sub.add_parser("theory", help="one-layer attention model: simulate, sweep, prove, figures")
    tsub = p.add_subparsers(dest="theory_command", metavar="SUBCOMMAND", required=True)

    from cpi.cli_config import add_config_arguments
    from theory.run import SimulationRun, SweepRun

    s = tsub.add_parser("simulate", help="simulate one configuration; writes trajectory.csv, config.json, figures",
                        description="Every flag is a field of theory.run.SimulationRun or of its SimConfig.")
    add_config_arguments(s, SimulationRun, inline="sim", required=("out",),
                         config_help="JSON/YAML file with SimConfig fields (and/or seeds, out, figures)")
    s.set_defaults(func=_simulate)

    w = tsub.add_parser("sweep", help="simulate a grid; writes trajectory.csv, summary.csv, config.json, phase diagram",
                        description="Every flag is a field of theory.run.SweepRun or of its base SimConfig.")
    add_config_arguments(w, SweepRun, inline="sim", required=("out",),
                         config_help="JSON/YAML file with the base SimConfig's fields (and/or grid, seeds, out)")
    w.set_defaults(func=_sweep)

    r = tsub.add_parser("prove", help="derive the expressions with sympy and check them against the simulator")
    r.add_argument("--draws", type=int, default=100, help="random admissible parameter draws (default 100)")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=_prove)

    f = tsub.add_parser("figures", help="regenerate every theory figure (PNG + PDF)")
    f.add_argument("--out", type=Path, default=Path("figures"))
    f.add_argument("--quick", action="store_true", help="fewer steps and a smaller sweep (about a minute)")
    f.add_argument("--only", nargs="+", metavar="NAME", help="just these figures, e.g. theory_trajectory theory_optimizers")
    f.set_defaults(func=_figures)


def _simulate(args) -> int:
    from cpi.cli_config import config_from_args
    from theory.run import run_simulation
    from theory.sweep import summarize

    cfg = config_from_args(args)
    table = run_simulation(cfg)
    for _, row in summarize(table).iterrows():
        print(f"seed {row.seed}: M_C start {row.start:.4f}, peak {row.peak:.4f} at step {row.t_peak}, "
              f"final {row.final:.4f} (min after peak {row.min_after_peak:.4f} at step {row.t_min})")
    print(f"wrote {cfg.out}/trajectory.csv, config.json" + (", trajectory.png/.pdf" if cfg.figures else ""))
    return 0


def _sweep(args) -> int:
    from cpi.cli_config import config_from_args, flag_given
    from theory.config import SimConfig
    from theory.run import SweepRun, run_sweep

    # an explicit --grid varies the plain SimConfig defaults; the phase-diagram grid has its own base
    base = SweepRun(sim=SimConfig()) if flag_given(args, "grid") and not flag_given(args, "config") else None
    cfg = config_from_args(args, base=base)
    table, summary = run_sweep(cfg)
    n_cfg = table["config_id"].nunique()
    figs = ["phase_diagram.png/.pdf"] if (len(cfg.grid) != 1) else []
    tables = (["trajectory.csv"] if cfg.trajectory else []) + ["summary.csv"]
    print(f"{n_cfg} configurations x {len(cfg.seeds)} seeds; mean inversion (peak - final M_C) "
          f"{summary['inversion'].mean():.4f}, max {summary['inversion'].max():.4f}")
    print(f"wrote {cfg.out}/" + ", ".join(tables + ["config.json"] + figs))
    return 0


def _prove(args) -> int:
    from theory import symbolic
    from theory.prove import run_checks

    if args.draws < 1:
        raise CpiError(f"--draws: must be >= 1, got {args.draws}")
    print("Derived from the model with sympy:")
    print(symbolic.describe())
    print()
    rep = run_checks(args.draws, args.seed)
    print(f"smallest eta with a second phase for the default parameters (eta_min): {rep.eta_min_default:.10g}")
    print(f"eta* used for the checks (derived t=1 theta_C projection most negative): {rep.eta_check_default:.6g}")
    print("\n".join(rep.lines))
    print(f"\n{'all checks passed' if rep.ok else 'FAILED: ' + ', '.join(rep.failures)}")
    return 0 if rep.ok else 1


def _figures(args) -> int:
    from theory.figures import make_all_figures

    paths = make_all_figures(args.out, quick=args.quick, names=args.only)
    print("\n".join(str(p) for p in paths))
    return 0
