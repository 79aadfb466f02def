"""Benchmark: the default theory sweep, batched closed-form simulator vs a naive autograd loop.

Times, in one run, (a) ``theory.simulate`` on the default phase-diagram grid
(240 configurations x 500 steps, one batched float64 computation per
vocabulary size) and (b) the naive baseline: one configuration at a time,
explicit d x d matrices W_KQ / W_V, torch autograd, the same metrics. The naive
loop is timed on a subset of configurations (``--naive-configs``, default 8)
and extrapolated linearly to the whole grid; the script says so in its output.

    python benchmarks/theory_sweep.py [--steps 500] [--naive-configs 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("CPI_PROGRESS", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--naive-configs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the naive loop (1 is its fastest setting on a busy 2-core machine)")
    args = ap.parse_args()

    import torch

    from theory.model import naive_simulate
    from theory.simulator import simulate
    from theory.sweep import default_sweep_configs

    cfgs = [c.replace(steps=args.steps) for c in default_sweep_configs()]
    simulate(cfgs[:2], steps=3, show_progress=False)  # warm-up (imports, allocator)

    t0 = time.perf_counter()
    table = simulate(cfgs, show_progress=False)
    t_batched = time.perf_counter() - t0

    torch.set_num_threads(args.threads)
    idx = [round(i * (len(cfgs) - 1) / max(1, args.naive_configs - 1)) for i in range(args.naive_configs)]
    subset = [cfgs[i] for i in sorted(set(idx))]
    t0 = time.perf_counter()
    naive_rows = [naive_simulate(c, seed=0) for c in subset]
    t_naive_subset = time.perf_counter() - t0
    t_naive = t_naive_subset / len(subset) * len(cfgs)

    # sanity: the batched run reproduces the naive one on the subset
    import numpy as np

    err = 0.0
    for c, rows in zip(subset, naive_rows):
        cid = cfgs.index(c)
        mc = table[table.config_id == cid]["M_C"].to_numpy()
        err = max(err, float(np.max(np.abs(mc - np.array([r["M_C"] for r in rows])))))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    print(f"grid: {len(cfgs)} configurations x {args.steps} steps (default phase-diagram sweep)")
    print(f"batched closed-form simulator : {t_batched:8.2f} s  ({len(cfgs) * args.steps / t_batched:,.0f} config-steps/s)")
    print(f"naive autograd loop, measured : {t_naive_subset:8.2f} s for {len(subset)} configurations "
          f"(threads={args.threads})")
    print(f"naive autograd loop, extrapolated to {len(cfgs)} configurations: {t_naive:8.1f} s")
    print(f"speed-up (naive / batched)   : {t_naive / t_batched:8.1f}x")
    print(f"max |M_C batched - M_C naive| on the subset: {err:.2e}")


if __name__ == "__main__":
    main()
