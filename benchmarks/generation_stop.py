"""Generation that stops where the answer ends, against generation to ``max_new_tokens``, in one run.

    python benchmarks/generation_stop.py [--model smollm2-135m-instruct] [--items 48] [--batch-size 16]
                                         [--new-tokens 20] [--threads 1] [--repeats 3]
                                         [--dtypes float32,bfloat16] [--items-file heldout.jsonl]

The controlled experiment's evaluation (alpaca template, 20 new tokens, batches of 16) on held-out
conflicts: ``--items-file`` (a run's ``seed-<s>/data-<key>/heldout.jsonl``) or the first ``--items``
CF_World_Facts conflicts. Both sides call :func:`fullscale.scoring.generate_outputs` on the same prompts:
**before** without stops (every batch runs ``max_new_tokens`` steps unless all its rows reach EOS),
**after** with the controlled experiment's stops (``DEFAULT_STOPS`` + the line break: a row ends at the
token that ends its answer, a batch when all its rows have). Alternated ``--repeats`` times, medians.
The evaluation's log-prob pass (:func:`fullscale.scoring.score_logprob`, unchanged) is timed in the same
loop, so the evaluation's speed-up (generation + log-prob) is reported beside the generation's. Each of
``--dtypes`` has its own copy of the model, and the dtypes alternate inside every repeat, so the bf16 /
float32 ratio of each pass is measured in the same run too.

Checks that every answer (:func:`fullscale.matching.cut_at_stops` with those stops) is identical and
prints seconds, generated tokens and the ratios before / after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("CPI_PROGRESS", "0")
os.environ.setdefault("CPI_CPU_BF16", "1")  # --dtype bfloat16 even on a CPU that would fall back (emulated there)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="registry name or checkpoint folder")
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--items-file", default=None, help="a JSONL of conflicts (e.g. a run's heldout.jsonl)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from experiments.controlled.stages import ANSWER_STOPS
    from fullscale.checkpoints import load_checkpoint
    from fullscale.conflicts import load_conflicts
    from fullscale.matching import DEFAULT_STOPS, cut_at_stops
    from fullscale.prompts import format_prompts
    from fullscale.scoring import generate_outputs, score_logprob

    stops = DEFAULT_STOPS + ANSWER_STOPS
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    models = {d: load_checkpoint(args.model, device="cpu", dtype=d) for d in dtypes}
    tok = models[dtypes[0]][1]
    items = list(load_conflicts(args.items_file or "CF_World_Facts"))[: args.items]
    prompts = format_prompts(items, tok, template="alpaca")
    print(f"model {args.model}, {', '.join(dtypes)}, {torch.get_num_threads()} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {len(items)} items ({args.items_file or 'CF_World_Facts'}), "
          f"alpaca, batch {args.batch_size}, {args.new_tokens} new tokens; load average {os.getloadavg()[0]:.1f}")
    times = {(d, k): [] for d in dtypes for k in ("before", "after", "logprob")}
    outs: dict[tuple[str, str], list[str]] = {}
    for d in dtypes:  # warm-up
        generate_outputs(models[d][0], tok, prompts[:2], args.batch_size, 2)
    for _ in range(args.repeats):
        for d in dtypes:
            model = models[d][0]
            for name, kw in (("before", {}), ("after", {"stops": stops})):
                t0 = time.perf_counter()
                outs[(d, name)] = generate_outputs(model, tok, prompts, args.batch_size, args.new_tokens, **kw)
                times[(d, name)].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            score_logprob(model, tok, items, "alpaca", args.batch_size)
            times[(d, "logprob")].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ok = True
    for d in dtypes:
        same = [cut_at_stops(a, stops) == cut_at_stops(b, stops) for a, b in zip(outs[(d, "before")], outs[(d, "after")])]
        ok = ok and all(same)
        n_tok = {k: sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs[(d, k)]) for k in ("before", "after")}
        for name in ("before", "after"):
            print(f"{d:8s} generation {name:6s}: {med[(d, name)]:7.2f} s (runs "
                  f"{', '.join(f'{t:.2f}' for t in times[(d, name)])}), {n_tok[name]} tokens in the decoded outputs")
        print(f"{d:8s} log-prob pass    : {med[(d, 'logprob')]:7.2f} s")
        print(f"{d:8s} answers identical: {sum(same)} of {len(same)}; generation before / after: "
              f"x{med[(d, 'before')] / med[(d, 'after')]:.2f}; evaluation (generation + log-prob) before / after: "
              f"x{(med[(d, 'before')] + med[(d, 'logprob')]) / (med[(d, 'after')] + med[(d, 'logprob')]):.2f}")
    if len(dtypes) == 2:
        a, b = dtypes
        for k in ("before", "after", "logprob"):
            print(f"{k:8s}: {a} / {b} time x{med[(a, k)] / med[(b, k)]:.2f}")
        agree = sum(cut_at_stops(x, stops) == cut_at_stops(y, stops) for x, y in zip(outs[(a, "after")], outs[(b, "after")]))
        print(f"answers identical across dtypes: {agree} of {len(prompts)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
