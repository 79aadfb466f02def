"""The knowledge stage in bfloat16 against float32 on the same items: agreement and speed, in one run.

    python benchmarks/knowledge_bf16.py [--model smollm2-135m-instruct] [--datasets CF_World_Facts]
                                        [--max-items 120] [--n-candidates 8] [--threads 1]

Loads the model twice (``float32``; ``bfloat16``, every weight and activation bf16), runs
:func:`fullscale.knowledge.known_facts` on the same items with the same candidates (log-probabilities are
computed in float32 from the logits in both), and reports: the share of items with the identical rank and
the identical ``known`` flag, the max and mean absolute difference of ``logp_true`` and of the margin
``logp_true - logp_best_other``, the known rates of both, and each pass's seconds (tokens/s ratio).
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


def compare(a, b) -> dict:
    """Agreement of two ``known_facts`` tables of the same items (``a`` the reference)."""
    import numpy as np

    assert list(a["item_id"]) == list(b["item_id"])
    ma, mb = a["logp_true"] - a["logp_best_other"], b["logp_true"] - b["logp_best_other"]
    d_lp, d_m = np.abs(a["logp_true"] - b["logp_true"]), np.abs(ma - mb)
    return {"n": len(a), "same_rank": float((a["rank"] == b["rank"]).mean()),
            "same_known": float((a["known"] == b["known"]).mean()),
            "max_abs_logp": float(d_lp.max()), "mean_abs_logp": float(d_lp.mean()),
            "max_abs_margin": float(d_m.max()), "mean_abs_margin": float(d_m.mean()),
            "known_rate_ref": float(a["known"].mean()), "known_rate": float(b["known"].mean()),
            "min_abs_margin_flipped": float(ma[a["known"] != b["known"]].abs().min()) if (a["known"] != b["known"]).any()
            else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--datasets", default="CF_World_Facts")
    parser.add_argument("--max-items", type=int, default=120)
    parser.add_argument("--n-candidates", type=int, default=8)
    parser.add_argument("--template", default="plain")
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fullscale.conflicts import load_conflicts
    from fullscale.knowledge import known_facts
    from fullscale.models import resolve_model

    torch.set_num_threads(a.threads)
    items = [it for ds in a.datasets.split(",") for it in load_conflicts(ds) if it.task == "qa"][: a.max_items]
    path = resolve_model(a.model)
    tok = AutoTokenizer.from_pretrained(path)
    tables, secs = {}, {}
    for dt in ("float32", "bfloat16"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dt)).eval()
        t0 = time.perf_counter()
        tables[dt] = known_facts(model, tok, items, template=a.template, n_candidates=a.n_candidates)
        secs[dt] = time.perf_counter() - t0
    res = compare(tables["float32"], tables["bfloat16"])
    print(f"{a.model}, {len(items)} items of {a.datasets}, {a.n_candidates} candidates, {a.threads} thread(s), "
          f"torch {torch.__version__}")
    print("bf16 vs float32: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    print(f"seconds: float32 {secs['float32']:.1f}, bfloat16 {secs['bfloat16']:.1f}, ratio "
          f"{secs['float32'] / secs['bfloat16']:.2f}")


if __name__ == "__main__":
    main()
