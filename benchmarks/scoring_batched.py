"""Items/s of the scorer, batched against one-at-a-time, on a small random model on CPU.

    python benchmarks/scoring_batched.py [--items 64] [--batch-size 16] [--threads 1]

Builds a small Llama-style checkpoint (4 layers, d_model 256, GQA) with the
test tokenizer in a temporary folder, takes items from the shipped
CF_World_Facts set (or synthetic ones if it is missing), and times
``score_logprob`` and ``score_generation`` with ``batch_size=1`` and with the
given batch size. Prints items/s for each and the batched/unbatched ratio, and
checks that batched log-probs equal unbatched ones to 1e-4.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("CPI_PROGRESS", "0")


def _items(n: int):
    try:
        from fullscale.conflicts import load_conflicts

        items = load_conflicts("CF_World_Facts")
    except Exception:  # noqa: BLE001 - benchmark falls back to synthetic items
        from tests.fullscale.evalkit import sample_items

        items = sample_items(6)
    return [items[i % len(items)] for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen-items", type=int, default=32)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from fullscale.checkpoints import load_checkpoint
    from fullscale.scoring import score_generation, score_logprob
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    items = _items(args.items)
    with tempfile.TemporaryDirectory() as tmp:
        tok = make_tokenizer("sp", corpus=[it.context + " " + it.question for it in items], vocab_size=1000)
        path = make_tiny_checkpoint(Path(tmp) / "small", arch="llama", tokenizer=tok, hidden_size=256,
                                    intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                                    num_key_value_heads=4, max_position_embeddings=1024)
        model, tok = load_checkpoint(path, device="cpu")
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: llama-style, {n_params / 1e6:.1f}M parameters, vocab {len(tok)}, "
              f"{torch.get_num_threads()} thread(s); {len(items)} items, alpaca template")
        score_logprob(model, tok, items[:4], batch_size=4)  # warm-up

        def timed(fn):
            t = time.perf_counter()
            res = fn()
            return res, time.perf_counter() - t

        naive, t0 = timed(lambda: score_logprob(model, tok, items, batch_size=1, share_prefix=False))
        one, t1 = timed(lambda: score_logprob(model, tok, items, batch_size=1))
        many, tb = timed(lambda: score_logprob(model, tok, items, batch_size=args.batch_size))
        diff = float((one["margin"] - many["margin"]).abs().max())
        diff0 = float((naive["margin"] - many["margin"]).abs().max())
        print(f"log-prob  4 full sequences/item, one at a time: {len(items) / t0:7.2f} items/s   (baseline)")
        print(f"log-prob  shared prompt, one item at a time:    {len(items) / t1:7.2f} items/s   ratio {t0 / t1:.2f}x")
        print(f"log-prob  shared prompt, batch {args.batch_size:3d}:            {len(items) / tb:7.2f} items/s   "
              f"ratio {t0 / tb:.2f}x vs baseline, {t1 / tb:.2f}x vs one-at-a-time; "
              f"max |batched - unbatched| margin = {max(diff, diff0):.2e}")
        g = items[: args.gen_items]
        g1, s1 = timed(lambda: score_generation(model, tok, g, batch_size=1, max_new_tokens=16))
        gb, sb = timed(lambda: score_generation(model, tok, g, batch_size=args.batch_size, max_new_tokens=16))
        same = int((g1["output"] == gb["output"]).sum())
        print(f"generate  one item at a time (16 new tokens):   {len(g) / s1:7.2f} items/s")
        print(f"generate  batch {args.batch_size:3d}, left padding:           {len(g) / sb:7.2f} items/s   "
              f"ratio {s1 / sb:.2f}x   identical outputs {same}/{len(g)}")
        if max(diff, diff0) > 1e-4:
            print("FAIL: batched scores differ from unbatched ones by more than 1e-4")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
