"""One training step with the full output layer against response-only logits (``ResponseLogitsCollator``).

    python benchmarks/response_logits.py [--model smollm2-135m-instruct] [--repeats 3] [--threads 1]

``cpi finetune`` computes logits only at the positions whose next token is a label
(``fullscale.collate.ResponseLogitsCollator``: a ``logits_to_keep`` mask plus ``shift_labels``).
On a context-QA record of ~140 tokens with a 4-token answer that skips most of the output layer,
which dominates the compute of a model with a large vocabulary (Gemma-3: 262k tokens).

Both sides run one forward + backward of the same batch (``--batch-size`` random records of
120-160 tokens, the last 4 tokens labelled; every parameter trainable) in the same process,
alternated ``--repeats`` times (full first, then response-only), so a steady load slows both alike.
Prints the seconds of each side per repeat, the ratio response-only / full (below 1 = faster),
the loss of each side and the relative difference of one weight's gradient (they must agree: the
same loss, computed from fewer logits).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("CPI_PROGRESS", "0")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def random_features(n: int, n_labels: int = 4, seed: int = 0) -> list[dict]:
    """``n`` token records of 120-160 random ids, the last ``n_labels`` labelled (a short answer)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    feats = []
    for _ in range(n):
        length = 120 + int(torch.randint(0, 40, (1,), generator=g))
        ids = torch.randint(100, 20000, (length,), generator=g).tolist()
        feats.append({"input_ids": ids, "attention_mask": [1] * length,
                      "labels": [-100] * (length - n_labels) + ids[-n_labels:]})
    return feats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fullscale.collate import ResponseLogitsCollator
    from fullscale.models import resolve_model

    torch.set_num_threads(a.threads)
    model_dir = Path(resolve_model(a.model))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # one MLP weight of the second block, compared between the two sides
    name, probe_weight = next((n, p) for n, p in model.named_parameters() if ".1.mlp." in n and n.endswith("weight"))
    feats = random_features(a.batch_size)
    batches = {"full": ResponseLogitsCollator(tok, response_logits_only=False)(feats),
               "response-only": ResponseLogitsCollator(tok)(feats)}

    def step(batch: dict) -> tuple[float, float, "torch.Tensor"]:
        model.zero_grad()
        t0 = time.perf_counter()
        out = model(**batch)
        out.loss.backward()
        return time.perf_counter() - t0, out.loss.item(), probe_weight.grad.clone()

    print(f"model {a.model} (vocabulary {model.config.vocab_size}), batch {a.batch_size}, "
          f"{sum(len(f['input_ids']) for f in feats)} tokens, 4 labelled per record, {a.threads} thread(s), "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; gradient compared: {name}")
    print("repeat  full_s  response_only_s  ratio  loss_full  loss_response_only  grad_rel_diff")
    ratios = []
    for r in range(a.repeats):
        tf, lf, gf = step(batches["full"])
        tk, lk, gk = step(batches["response-only"])
        ratios.append(tk / tf)
        rel = float((gf - gk).norm() / gf.norm())
        print(f"{r:6d}  {tf:6.2f}  {tk:15.2f}  {tk / tf:5.2f}  {lf:9.6f}  {lk:18.6f}  {rel:13.1e}")
    print(f"ratio response-only / full: min {min(ratios):.2f}, max {max(ratios):.2f} over {a.repeats} repeats")


if __name__ == "__main__":
    main()
