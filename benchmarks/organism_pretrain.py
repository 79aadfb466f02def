"""Pretraining speed of the model organism: tokens/s with 1 torch thread vs 2 (baseline: torch default).

    python benchmarks/organism_pretrain.py [--steps 150]

Runs the organism's pretraining loop (default world and model) for ``--steps`` steps with
``torch.set_num_threads(1)`` and with 2 threads, in this process, and prints tokens/s and the ratio.
Measured on the (otherwise idle) 2-core VM: 2 threads 10.6 k tokens/s, 1 thread 6.1 k (ratio
0.58x). On the same VM shared with other jobs (load 6-9), 2 threads slowed to a crawl (spinning
OpenMP workers), which is why ``OrganismConfig.threads`` defaults to 1; use ``--set threads=2``
on a dedicated machine.
"""

from __future__ import annotations

import argparse

import torch

from experiments.organism.experiment import OrganismConfig, template_texts
from experiments.organism.pretrain import pretrain_organism
from experiments.organism.world import build_tokenizer, build_world


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    cfg = OrganismConfig()
    world = build_world(cfg.world)
    tok = build_tokenizer(world, extra_texts=template_texts())
    pcfg = cfg.pretrain.replace(steps=args.steps, warmup=10, threads=0)
    results = {}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        r = pretrain_organism(world, tok, pcfg, desc=f"pretrain ({threads} threads)")
        results[threads] = r.tokens_per_s
        print(f"threads={threads}: {r.tokens_per_s:,.0f} tokens/s ({r.tokens:,} tokens in {r.seconds:.1f} s)")
    print(f"ratio 1 thread / 2 threads: {results[1] / results[2]:.2f}x")


if __name__ == "__main__":
    main()
