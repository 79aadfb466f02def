"""The organism's rho sweep (incl. the rho = 1 control) and mitigations: cf accuracy vs step per variant.

    python figures/organism_sweep.py [SWEEP_DIR] [OUT_DIR] [--quick] [--seeds 0,1,2]

Runs (or resumes) ``cpi organism sweep`` into SWEEP_DIR (default runs/organism_sweep) and writes
organism_sweep_rho and organism_sweep_mitigations (.png and .pdf) into OUT_DIR (default figures/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.organism.experiment import OrganismConfig
from experiments.organism.sweep import SweepConfig, plot_sweep, run_sweep, sweep_summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep_dir", nargs="?", default="runs/organism_sweep")
    ap.add_argument("out_dir", nargs="?", default="figures")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rhos", default="0.1,0.3,0.5,1.0")
    args = ap.parse_args()
    base = OrganismConfig.quick() if args.quick else OrganismConfig()
    sweep = SweepConfig(seeds=tuple(int(s) for s in args.seeds.split(",")),
                        rhos=tuple(float(r) for r in args.rhos.split(",")))
    table = run_sweep(base, sweep, Path(args.sweep_dir))
    print(sweep_summary(table).round(3).to_string(index=False))
    for p in plot_sweep(table, Path(args.out_dir)):
        print(p)


if __name__ == "__main__":
    main()
