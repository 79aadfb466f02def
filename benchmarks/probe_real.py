"""The probe on a real checkpoint against a bare Hugging Face forward over the same prompts.

Model: a local checkpoint folder (default ``/tmp/models/smollm2``, SmolLM2-135M-Instruct converted
to float32; any folder `cpi models fetch` writes works). Prompts: the first ``--items`` items of a
shipped conflict set formatted by ``mechinterp.probe.prepare_items`` (alpaca template, answers'
shared prefix appended) — the very token ids the probe reads — in the probe's length-sorted batches
of ``--batch`` (left-padded, attention mask), float32, CPU, ``--threads`` torch threads.

Variants, alternated ``--repeats`` times in one process after one warm-up each (paired, so load
from other processes hits both alike):

  (a) bare HF forward, eager attention (what the bridge runs underneath), final-position logits
      only (``logits_to_keep=1``), ``torch.inference_mode()``;
  (s) the same with SDPA attention (the transformers default), for reference;
  (b) the probe: ``mechinterp.probe.run_probe_batch`` over the same batches (masses, span-resolved
      value contributions, MLP/embedding terms, reconciliation), through the TransformerLens bridge.

Prints medians, probe/bare ratios (median, min, max over the paired repeats) and tokens/s (real,
non-pad prompt tokens per second).

    python benchmarks/probe_real.py --model /tmp/models/smollm2 --items 16 --batch 8 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="/tmp/models/smollm2")
    ap.add_argument("--dataset", default="CF_World_Facts")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from fullscale.conflicts import load_conflicts
    from fullscale.batching import pad_batch, pad_token_id
    from mechinterp.load import load_bridge
    from mechinterp.probe import prepare_items, run_probe_batch

    torch.set_num_threads(args.threads)
    bridge, tok = load_bridge(args.model, device="cpu", dtype="float32")
    items = prepare_items(list(load_conflicts(args.dataset))[:args.items], tok, template="alpaca")
    items = sorted(items, key=lambda it: len(it.input_ids))
    batches = [items[i:i + args.batch] for i in range(0, len(items), args.batch)]
    pad = pad_token_id(tok)
    tensors = [pad_batch([it.input_ids for it in b], pad, side="left") for b in batches]
    n_tokens = sum(len(it.input_ids) for it in items)
    bare = {impl: AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                                       attn_implementation=impl).eval() for impl in ("eager", "sdpa")}

    def run_bare(impl: str) -> None:
        with torch.inference_mode():
            for ids, mask in tensors:
                bare[impl](input_ids=ids, attention_mask=mask, logits_to_keep=1)

    def run_probe() -> None:
        for b in batches:
            run_probe_batch(bridge, b, pad)

    variants = {"a": lambda: run_bare("eager"), "s": lambda: run_bare("sdpa"), "b": run_probe}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    r_eager = sorted(b / a for a, b in zip(times["a"], times["b"]))
    r_sdpa = sorted(b / s for s, b in zip(times["s"], times["b"]))
    print(f"model {args.model} ({sum(p.numel() for p in bare['eager'].parameters()) / 1e6:.0f}M params, float32, "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}); {len(items)} {args.dataset} prompts, "
          f"{n_tokens} tokens, batch {args.batch}, {args.repeats} paired repeats")
    for k, label in (("a", "bare HF forward, eager"), ("s", "bare HF forward, sdpa"), ("b", "probe")):
        print(f"  {label:<24} median {med[k]:.3f} s  ({n_tokens / med[k]:.0f} tokens/s)")
    print(f"  probe / bare eager: median x{statistics.median(r_eager):.3f} (min x{r_eager[0]:.3f}, max x{r_eager[-1]:.3f})")
    print(f"  probe / bare sdpa : median x{statistics.median(r_sdpa):.3f} (min x{r_sdpa[0]:.3f}, max x{r_sdpa[-1]:.3f})")


if __name__ == "__main__":
    main()
