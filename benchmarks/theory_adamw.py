"""Benchmark: an AdamW sweep, batched closed-form simulator vs the naive autograd + torch.optim loop.

Times, in one run, (a) ``theory.simulate`` on an AdamW grid of 210
configurations x 500 steps (n_C = 8 as in the phase-diagram sweep; n_CS/n_C x lr x
weight decay x full batch / batch 8; one batched float64 computation) and (b) the naive baseline: one configuration
at a time, explicit d x d matrices W_KQ / W_V, torch autograd and
``torch.optim.AdamW`` (``theory.model.naive_simulate``). The naive loop is
timed on a subset of configurations (``--naive-configs``, default 6) and
extrapolated linearly to the whole grid; the script says so in its output and
checks that both give the same M_C on the subset.

    python benchmarks/theory_adamw.py [--steps 500] [--naive-configs 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time

os.environ.setdefault("CPI_PROGRESS", "0")

RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
WEIGHT_DECAY = (0.0, 0.01, 0.1)
BATCH = (None, 8)


def adamw_grid(steps: int):
    from theory.config import SimConfig

    # the phase-diagram sweep's size (n_C = 8, 4 test points); K_S, K_A fixed so the grid is one batch
    base = SimConfig(n_C=8, n_test=4, K_S=28, K_A=32, steps=steps, optimizer="adamw")
    return [base.replace(n_CS=int(round(r * base.n_C)), lr=lr, weight_decay=wd, batch_size=bs, label="adamw")
            for r, lr, wd, bs in itertools.product(RATIOS, LRS, WEIGHT_DECAY, BATCH)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--naive-configs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides (1 is fastest on a busy 2-core machine)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from theory.model import naive_simulate
    from theory.simulator import simulate

    cfgs = adamw_grid(args.steps)
    simulate(cfgs[:2], steps=3, show_progress=False)  # warm-up (imports, allocator)

    t0, c0 = time.perf_counter(), time.process_time()
    table = simulate(cfgs, show_progress=False, num_threads=args.threads)
    t_batched, c_batched = time.perf_counter() - t0, time.process_time() - c0

    torch.set_num_threads(args.threads)
    idx = sorted({round(i * (len(cfgs) - 1) / max(1, args.naive_configs - 1)) for i in range(args.naive_configs)})
    t0, c0 = time.perf_counter(), time.process_time()
    naive = {i: naive_simulate(cfgs[i], seed=0) for i in idx}
    t_naive_subset, c_naive_subset = time.perf_counter() - t0, time.process_time() - c0
    t_naive = t_naive_subset / len(idx) * len(cfgs)

    err = max(float(np.max(np.abs(table[table.config_id == i]["M_C"].to_numpy() - np.array([r["M_C"] for r in rows]))))
              for i, rows in naive.items())

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    print(f"grid: {len(cfgs)} AdamW configurations x {args.steps} steps (n_CS/n_C x lr x weight decay x batch)")
    print(f"batched closed-form simulator : {t_batched:8.2f} s wall, {c_batched:.2f} s CPU "
          f"({len(cfgs) * args.steps / t_batched:,.0f} config-steps/s)")
    print(f"naive autograd + torch.optim.AdamW, measured : {t_naive_subset:8.2f} s wall, {c_naive_subset:.2f} s CPU "
          f"for {len(idx)} configurations (threads={args.threads})")
    print(f"naive loop, extrapolated to {len(cfgs)} configurations: {t_naive:8.1f} s")
    print(f"speed-up (naive / batched)   : {t_naive / t_batched:8.1f}x wall, "
          f"{c_naive_subset / len(idx) * len(cfgs) / c_batched:.1f}x CPU")
    print(f"max |M_C batched - M_C naive| on the subset: {err:.2e}")


if __name__ == "__main__":
    main()
