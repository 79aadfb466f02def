"""``cpi theory simulate|sweep|prove|figures`` (registered by :mod:`cpi.cli`).

Heavy imports (torch, sympy, matplotlib) happen inside the handlers. Every
result is computed in memory first and written only once it is complete, each
file atomically, so a bad config, a non-finite loss or an interruption never
leaves a half-written ``--out`` folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cpi.errors import ConfigError, CpiError


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this package's subcommands to the top-level ``cpi`` parser."""
    p = sub.add_parser("theory", help="one-layer attention model: simulate, sweep, prove, figures")
    tsub = p.add_subparsers(dest="theory_command", metavar="SUBCOMMAND", required=True)

    s = tsub.add_parser("simulate", help="simulate one configuration; writes trajectory.csv, config.json, figures")
    _config_args(s)
    s.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (matter only with init_noise > 0)")
    s.add_argument("--no-figures", action="store_true", help="skip the figures")
    s.set_defaults(func=_simulate)

    w = tsub.add_parser("sweep", help="simulate a grid; writes trajectory.csv, summary.csv, config.json, phase diagram")
    _config_args(w)
    w.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="grid axis over a config field (repeatable); default: the phase-diagram grid")
    w.add_argument("--seeds", type=int, nargs="+", default=[0])
    w.add_argument("--no-trajectory", action="store_true", help="write only summary.csv (the trajectory can be large)")
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


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="JSON/YAML file with SimConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set n_CS=8 --set mode=full")
    p.add_argument("--out", type=Path, required=True, help="output folder")


def _load_config(args):
    from theory.config import SimConfig

    cfg = SimConfig.from_file(args.config) if args.config else SimConfig()
    return cfg.with_overrides(args.overrides) if args.overrides else cfg


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CpiError(f"--out {out}: exists and is not a folder")


def _write_figures(figs: dict, out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from cpi.io import atomic_save_figure
    from theory.figures import DPI

    paths = []
    for name, fig in figs.items():
        paths.append(atomic_save_figure(fig, out / f"{name}.png", dpi=DPI))
        paths.append(atomic_save_figure(fig, out / f"{name}.pdf"))
        plt.close(fig)
    return paths


def _simulate(args) -> int:
    from cpi.io import save_run
    from theory.simulator import simulate
    from theory.sweep import summarize

    cfg = _load_config(args)
    _check_out(args.out)
    table = simulate(cfg, seeds=args.seeds)  # raises CpiError on a non-finite loss, before anything is written
    figs = {}
    if not args.no_figures:
        from theory.plots import plot_trajectory

        figs["trajectory"] = plot_trajectory(table, title=cfg.label or None)
    summ = summarize(table)
    save_run(args.out, cfg, tables={"trajectory": table}, seeds=list(args.seeds), command="cpi theory simulate")
    _write_figures(figs, args.out)
    for _, row in summ.iterrows():
        print(f"seed {row.seed}: M_C start {row.start:.4f}, peak {row.peak:.4f} at step {row.t_peak}, "
              f"final {row.final:.4f} (min after peak {row.min_after_peak:.4f} at step {row.t_min})")
    print(f"wrote {args.out}/trajectory.csv, config.json" + (", trajectory.png/.pdf" if figs else ""))
    return 0


def _parse_grid(items: list[str], base) -> dict[str, list]:
    import yaml

    grid = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid '{item}': expected FIELD=V1,V2,...")
        key, raw = item.split("=", 1)
        try:
            vals = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
        except yaml.YAMLError as exc:
            raise ConfigError(f"--grid {key}: cannot parse {raw!r}") from exc
        if not vals:
            raise ConfigError(f"--grid {key}: no values")
        grid[key.strip()] = vals
    for k, vs in grid.items():  # validate field names and value types before anything runs
        for v in vs:
            base.replace(**{k: v})
    return grid


def _sweep(args) -> int:
    import itertools

    from cpi.io import save_run
    from theory.plots import plot_phase_diagram
    from theory.simulator import simulate
    from theory.config import SimConfig
    from theory.sweep import SWEEP_BASE, default_sweep_configs, summarize

    if args.config:
        base = _load_config(args)
    elif args.grid:
        base = SimConfig().with_overrides(args.overrides)
    else:  # the phase-diagram grid has its own (smaller) base
        base = SimConfig(**SWEEP_BASE).with_overrides(args.overrides)
    _check_out(args.out)
    if args.grid:
        grid = _parse_grid(args.grid, base)
        keys = list(grid)
        cfgs = [base.replace(**dict(zip(keys, combo))) for combo in itertools.product(*grid.values())]
        x_axis = keys[0]
        y_axis = keys[1] if len(keys) > 1 else None
    else:
        cfgs = default_sweep_configs(base)
        x_axis, y_axis = "ratio_CS_C", "ratio_M_C"
    table = simulate(cfgs, seeds=args.seeds)
    summary = summarize(table)
    figs = {"phase_diagram": plot_phase_diagram(summary, "inversion", x_axis, y_axis)} if y_axis else {}
    tables = {"summary": summary} if args.no_trajectory else {"trajectory": table, "summary": summary}
    save_run(args.out, {"configs": [c.to_dict() for c in cfgs]}, tables=tables, seeds=list(args.seeds),
             command="cpi theory sweep")
    _write_figures(figs, args.out)
    print(f"{len(cfgs)} configurations x {len(args.seeds)} seeds; mean inversion (peak - final M_C) "
          f"{summary['inversion'].mean():.4f}, max {summary['inversion'].max():.4f}")
    print(f"wrote {args.out}/" + ", ".join(list(f"{k}.csv" for k in tables) + ["config.json"] + [f"{k}.png/.pdf" for k in figs]))
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
