"""Training throughput on this machine: one process at 1 thread, one at 2 threads, two processes at 1 thread.

    python benchmarks/train_throughput.py [--model smollm2-135m-instruct] [--steps 5] [--batch-size 8]

Why ``ControlledConfig(workers=2, threads=1)``: on a 2-core machine, two seeds trained at once in two
1-thread processes may beat one process using both cores (small matrices keep the second thread of
one process partly idle). Each arm runs the same LoRA step (rank 16 on every linear layer, AdamW,
response-only logits, ``--batch-size`` random records of ~140 tokens) ``--steps`` times in fresh
``python`` subprocesses; an arm's time per step is the median of its steps after the first (warm-up).
Prints each arm's seconds per step, its throughput (steps per second summed over its processes),
peak memory per process, and the throughput ratios against one 1-thread process (the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKER = r"""
import json, resource, sys, time
import torch
threads, model_dir, steps, batch = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from fullscale.collate import ResponseLogitsCollator
sys.path.insert(0, sys.argv[5])
from response_logits import random_features
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
b = ResponseLogitsCollator(tok)(random_features(batch))
times = []
for _ in range(steps):
    t0 = time.perf_counter(); out = model(**b); out.loss.backward(); opt.step(); opt.zero_grad()
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_arm(n_procs: int, threads: int, model_dir: Path, steps: int, batch: int) -> dict:
    """Start ``n_procs`` workers at ``threads`` threads together; their per-step seconds and peak MiB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "CPI_PROGRESS": "0",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    argv = [sys.executable, "-c", WORKER, str(threads), str(model_dir), str(steps), str(batch), str(ROOT / "benchmarks")]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n_procs)]
    outs = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"train_throughput: a worker failed with exit code {p.returncode}")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    per_step = [statistics.median(o["times"][1:]) for o in outs]
    return {"arm": f"{n_procs} process(es) x {threads} thread(s)", "s_per_step": per_step,
            "steps_per_s": sum(1 / t for t in per_step), "peak_mib": [o["peak_mib"] for o in outs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    a = parser.parse_args()
    if a.steps < 2:
        raise SystemExit("train_throughput: --steps must be >= 2 (the first step is a warm-up)")

    import torch

    from fullscale.models import resolve_model

    model_dir = Path(resolve_model(a.model))
    print(f"model {a.model}, LoRA r16 all-linear, batch {a.batch_size}, {a.steps} steps per process, "
          f"{os.cpu_count()} CPUs, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    arms = [run_arm(1, 1, model_dir, a.steps, a.batch_size), run_arm(1, 2, model_dir, a.steps, a.batch_size),
            run_arm(2, 1, model_dir, a.steps, a.batch_size)]
    base = arms[0]["steps_per_s"]
    print("arm                          s/step (per process)   steps/s (sum)  x baseline  peak MiB (per process)")
    for arm in arms:
        steps = ", ".join(f"{t:.1f}" for t in arm["s_per_step"])
        mem = ", ".join(f"{m:.0f}" for m in arm["peak_mib"])
        print(f"{arm['arm']:28s} {steps:22s} {arm['steps_per_s']:13.3f}  {arm['steps_per_s'] / base:10.2f}  {mem}")


if __name__ == "__main__":
    main()
