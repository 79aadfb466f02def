"""Context-criticality scoring by the base (``cpi data score-context``, the filter mitigation): response-only
logits against the full output layer.

    python benchmarks/score_context.py [--model smollm2-135m-instruct] [--records 48] [--repeats 2] [--threads 1]

The filter scores every finetuning record twice with the base model (loss of the response with and
without the context) and drops the lowest quarter. ``fullscale.curation.response_losses`` projects
only the response positions onto the vocabulary (``logits_to_keep``); the baseline
(``response_logits_only=False``) computes the ``batch pos d_vocab`` logits of every position, which
on Gemma-3's 262k-token vocabulary dominates time and memory.

Records: ``--records`` of the controlled mixture (``benchmarks/finetune_real.py``'s
``mixture_records``: CF_World_Facts, Alpaca template, ~110 tokens each). Each side runs in a fresh
``python`` subprocess (so one side's freed memory cannot hide the other's peak), alternated
``--repeats`` times, baseline first. Prints per side the scoring seconds (model load excluded), the
process's peak RSS (load included), the ratio response-only / full, and the largest difference of
the scores (``gap``) between the sides, which must be float rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKER = r"""
import json, resource, sys, time
import torch
threads, model_dir, data, only = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
torch.set_num_threads(threads)
from fullscale.checkpoints import load_checkpoint
from fullscale.curation import score_context_criticality
from fullscale.ift_data import load_ift_data
examples = load_ift_data(data)
model, tok = load_checkpoint(model_dir)
t0 = time.perf_counter()
scores = score_context_criticality(model, tok, examples, template="alpaca", max_length=256,
                                   response_logits_only=only)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "gap": scores["gap"].tolist()}))
"""


def run_side(model_dir: Path, data: Path, only: bool, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "CPI_PROGRESS": "0",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    out = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(model_dir), str(data), "1" if only else "0"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()

    from benchmarks.finetune_real import mixture_records
    from experiments.controlled.mixture import write_records
    from fullscale.models import resolve_model

    model_dir = Path(resolve_model(a.model))
    with tempfile.TemporaryDirectory() as tmp:
        data = write_records(mixture_records(a.records), Path(tmp) / "ift.jsonl")
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(a.repeats):
            for only in (False, True):
                res = run_side(model_dir, data, only, a.threads)
                runs[only].append(res)
                side = "response-only" if only else "full logits"
                print(f"repeat {r + 1}  {side:13s}  {res['seconds']:6.1f} s  peak RSS {res['peak_kib'] / 2**20:.2f} GiB",
                      flush=True)
    best = {only: min(x["seconds"] for x in v) for only, v in runs.items()}
    peak = {only: max(x["peak_kib"] for x in v) / 2**20 for only, v in runs.items()}
    diff = max(abs(x - y) for x, y in zip(runs[False][0]["gap"], runs[True][0]["gap"]) if x == x and y == y)
    print(f"model {a.model}, {a.records} records, {a.threads} thread(s): best of {a.repeats}: full {best[False]:.1f} s, "
          f"response-only {best[True]:.1f} s, ratio {best[True] / best[False]:.2f}; peak RSS {peak[False]:.2f} -> "
          f"{peak[True]:.2f} GiB; largest |gap| difference {diff:.1e} nats")


if __name__ == "__main__":
    main()
