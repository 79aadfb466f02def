"""Probe overhead: time and peak memory of the mechinterp probe against a bare HF forward.

Model: a Llama-style decoder with grouped-query attention built locally from a config (random
weights, float32, CPU): d_model 512, 8 layers, 8 query heads over 2 KV heads, MLP 1536,
vocabulary 32000 (~57M parameters). Inputs: batch 32 of left-padded prompts of about S tokens
(lengths S-8..S), context span = first half, question = the next quarter.

Variants, each in a fresh subprocess (so one variant's freed memory cannot hide another's peak):

  (a) bare HF forward returning final-position logits only (``logits_to_keep=1``, left padding +
      attention_mask, inference_mode), eager attention — the implementation the bridge forces
      so that ``hook_pattern`` exists; ``(a-sdpa)`` is the same with SDPA attention, for reference;
  (b) the probe (``mechinterp.probe.probe_arrays``): masses + value contributions + MLP/embedding
      terms + reconciliation, through the TransformerLens bridge;
  (c) naive: ``bridge.run_with_cache`` with the full activation cache, one prompt at a time, then
      the same masses/contributions computed from the cache.

Time: median of ``--repeats`` runs after one warm-up. Peak memory: the process's peak resident
set (VmHWM, reset through /proc/self/clear_refs) during the first run, minus the resident set
just before it (i.e. activation memory over the loaded model), plus the absolute peak.

    python benchmarks/probe_overhead.py                  # S=64 time + memory, S=512 memory
    python benchmarks/probe_overhead.py --seq 64 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CFG = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
           num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=False)


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def build(attn: str):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(**CFG, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).eval()
    return model


def make_items(batch: int, seq: int):
    import numpy as np

    from mechinterp.probe import ProbeItem

    rng = np.random.default_rng(0)
    items = []
    for i in range(batch):
        n = int(rng.integers(max(seq - 8, 8), seq + 1))
        ids = (1,) + tuple(int(t) for t in rng.integers(3, CFG["vocab_size"], size=n - 1))
        items.append(ProbeItem(f"b{i}", ids, {"context": (1, 1 + n // 2), "question": (1 + n // 2, 1 + 3 * n // 4)},
                               context_token=int(rng.integers(3, 32000)), parametric_token=int(rng.integers(3, 32000)),
                               has_bos=True))
    return items


def run_variant(variant: str, batch: int, seq: int, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from mechinterp.probe import collate, probe_arrays
    from tests.tiny_models import make_tokenizer

    items = make_items(batch, seq)
    tok = make_tokenizer("sp")
    model = build("sdpa" if variant == "a-sdpa" else "eager")
    if variant in ("b", "c", "ab"):
        from mechinterp.load import bridge_from_model

        bridge = bridge_from_model(model, tok)
    coll = collate(items, 0, "cpu")

    def a() -> None:
        with torch.inference_mode():
            model(input_ids=coll["input_ids"], attention_mask=coll["attention_mask"], logits_to_keep=1)

    def b() -> None:
        probe_arrays(bridge, tok, items, batch_size=batch)

    def c() -> None:
        from mechinterp.probe import SPANS, _direction, _norm_scale, readout

        ro = readout(bridge)
        L, H, KV, dh = CFG["num_hidden_layers"], 8, 2, CFG["hidden_size"] // 8
        with torch.inference_mode():
            for it in items:
                ids = torch.tensor([it.input_ids])
                logits, cache = bridge.run_with_cache(ids)
                g, const = _direction(ro, torch.tensor([it.context_token]), torch.tensor([it.parametric_token]))
                labels = it.span_mask()
                m = torch.tensor([[1.0 if lab == s else 0.0 for lab in labels] for s in SPANS])  # [span pos]
                scale = _norm_scale(ro, cache["ln_final.hook_in"][:, -1])
                for layer in range(L):
                    a_ = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1, :]  # [head pos]
                    v = cache[f"blocks.{layer}.attn.v.hook_out"][0]  # [pos kv d_head]
                    W = bridge.blocks[layer].attn.o.original_component.weight.view(-1, H, dh)
                    u = torch.einsum("mhd,m->hd", W, g[0])
                    proj = torch.einsum("skd,hd->hs", v[:, torch.arange(H) // (H // KV)], u)
                    _ = a_ @ m.T, (a_ * proj) @ m.T / scale
                del cache, logits

    import gc

    def bridge_only() -> None:
        with torch.inference_mode():
            bridge(coll["input_ids"], attention_mask=coll["attention_mask"], logits_to_keep=1)

    if variant == "ab":  # paired timing in one process: alternate (a), bridge w/o hooks, (b) on the same weights
        a(), bridge_only(), b()  # warm-up
        pairs, bridge_times = [], []
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            a()
            t1 = time.perf_counter()
            bridge_only()
            t2 = time.perf_counter()
            b()
            t3 = time.perf_counter()
            pairs.append((t1 - t0, t3 - t2))
            bridge_times.append(t2 - t1)
        ratios = sorted(tb / ta for ta, tb in pairs)
        return {"variant": "ab", "seq": seq, "pairs": pairs, "median_ratio": statistics.median(ratios),
                "min_ratio": ratios[0], "max_ratio": ratios[-1], "bridge_times": bridge_times,
                "median_a": statistics.median(p[0] for p in pairs), "median_b": statistics.median(p[1] for p in pairs),
                "median_bridge": statistics.median(bridge_times),
                "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    fn = {"a": a, "a-sdpa": a, "b": b, "c": c}[variant]

    gc.collect()
    before = _rss_kb("VmRSS")
    ok = _reset_peak()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"variant": variant, "seq": seq, "batch": batch, "threads": threads,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "time_s": statistics.median(times) if times else first, "times": times, "first_s": first,
            "peak_delta_MB": (peak - before) / 1024 if ok else float("nan"), "peak_MB": peak / 1024,
            "rss_before_MB": before / 1024}


def spawn(variant: str, batch: int, seq: int, repeats: int, threads: int) -> dict:
    env = {**os.environ, "CPI_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--batch", str(batch), "--seq", str(seq),
                          "--repeats", str(repeats), "--threads", str(threads)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"variant {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=None, help="only this S (default: S=64 timing+memory, S=512 memory)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-naive", action="store_true", help="skip (c) (slow at large S)")
    ap.add_argument("--paired-only", action="store_true", help="only the paired timing (no memory runs)")
    ap.add_argument("--paired", type=int, default=0,
                    help="also time N alternating (a),(b) pairs in one process (robust on a shared machine)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.batch, args.seq or 64, args.repeats, args.threads)))
        return
    plans = [(args.seq, args.repeats)] if args.seq else [(64, args.repeats), (512, 0)]
    if args.paired_only:
        for seq, _ in plans:
            ab = spawn("ab", args.batch, seq, args.paired or 5, args.threads)
            print(f"batch {args.batch} x S~{seq}, {args.threads} threads, {len(ab['pairs'])} alternations: "
                  f"bare eager {ab['median_a']:.3f} s, bridge without hooks {ab['median_bridge']:.3f} s, "
                  f"probe {ab['median_b']:.3f} s; probe/bare median x{ab['median_ratio']:.3f} "
                  f"(min x{ab['min_ratio']:.3f}, max x{ab['max_ratio']:.3f})")
        return
    for seq, reps in plans:
        variants = ["a", "a-sdpa", "b"] + ([] if args.skip_naive or seq > 128 else ["c"])
        res = {v: spawn(v, args.batch, seq, reps, args.threads) for v in variants}
        print(f"\n== batch {args.batch} x S~{seq} tokens, {res['a']['params_M']:.1f}M params, "
              f"{args.threads} threads, repeats {reps} ==")
        print(f"{'variant':<8} {'time_s':>8} {'peak_delta_MB':>14} {'peak_MB':>9}")
        for v, r in res.items():
            print(f"{v:<8} {r['time_s']:>8.3f} {r['peak_delta_MB']:>14.1f} {r['peak_MB']:>9.1f}")
        a, b = res["a"], res["b"]
        print(f"probe / bare-eager : time x{b['time_s'] / a['time_s']:.3f}, activation peak "
              f"x{b['peak_delta_MB'] / a['peak_delta_MB']:.3f}, total peak x{b['peak_MB'] / a['peak_MB']:.3f}")
        s = res["a-sdpa"]
        print(f"probe / bare-sdpa  : time x{b['time_s'] / s['time_s']:.3f}, activation peak "
              f"x{b['peak_delta_MB'] / s['peak_delta_MB']:.3f}, total peak x{b['peak_MB'] / s['peak_MB']:.3f}")
        if "c" in res:
            c = res["c"]
            print(f"naive / probe      : time x{c['time_s'] / b['time_s']:.3f}, activation peak "
                  f"x{c['peak_delta_MB'] / b['peak_delta_MB']:.3f}")
        if args.paired:
            ab = spawn("ab", args.batch, seq, args.paired, args.threads)
            print(f"paired (a),(b) x{args.paired}: probe/bare-eager time median x{ab['median_ratio']:.3f} "
                  f"(min x{ab['min_ratio']:.3f}, max x{ab['max_ratio']:.3f}); pairs (s): "
                  + ", ".join(f"{x:.2f}/{y:.2f}" for x, y in ab["pairs"]))
            print(f"  medians: bare eager {ab['median_a']:.3f} s, bridge without hooks {ab['median_bridge']:.3f} s, "
                  f"probe {ab['median_b']:.3f} s")


if __name__ == "__main__":
    main()
