"""Shared builders for the finetuning/curation/augmentation tests (tiny, offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

COUNTRIES = [("France", "Paris"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
             ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Chile", "Santiago")]


def alpaca_records(n: int = 16) -> list[dict[str, Any]]:
    """Small Alpaca-shaped records: half with a context (``input``), half without."""
    recs = []
    for i in range(n):
        c, cap = COUNTRIES[i % len(COUNTRIES)]
        recs.append({
            "instruction": f"What is the capital of {c}?",
            "input": f"The capital of {c} is {cap}." if i % 2 else "",
            "output": cap,
        })
    return recs


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def corpus() -> list[str]:
    return [f"What is the capital of {c}? The capital of {c} is {cap}. {cap}" for c, cap in COUNTRIES]


def make_base(root: Path, arch: str = "llama", chat_template: bool = False) -> Path:
    """A tiny random checkpoint of ``arch`` with a BPE tokenizer trained on the test corpus."""
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    tok = make_tokenizer("bpe", corpus=corpus(), chat_template=chat_template)
    return make_tiny_checkpoint(root / f"base-{arch}", arch, tokenizer=tok)


def base_config(base: Path, data: Path, out: Path, **changes: Any):
    """A fast FinetuneConfig for tests (6 steps, a checkpoint every 2)."""
    from fullscale.finetune import FinetuneConfig

    kw: dict[str, Any] = dict(base_model=str(base), data=str(data), output_dir=str(out), max_steps=6, save_steps=2,
                              per_device_batch_size=4, gradient_accumulation_steps=1, learning_rate=3e-3,
                              warmup_ratio=0.0, logging_steps=1, max_seq_length=256, dtype="float32")
    kw.update(changes)
    return FinetuneConfig(**kw)


def conflict_records(prefix: str = "t", dataset: str = "CF_Test") -> list[dict[str, Any]]:
    """Hand-made knowledge-conflict items (two categories) in the conflict JSONL schema."""
    cap = [("France", "Lyon", "Paris"), ("Italy", "Milan", "Rome"), ("Germany", "Hamburg", "Berlin"),
           ("Spain", "Seville", "Madrid"), ("Japan", "Osaka", "Tokyo"), ("Egypt", "Luxor", "Cairo")]
    born = [("Albert Einstein", "Vienna", "Ulm"), ("Marie Curie", "Prague", "Warsaw"),
            ("Isaac Newton", "Dublin", "Woolsthorpe"), ("Ada Lovelace", "Oslo", "London")]
    recs = []
    for i, (c, ctx_ans, par) in enumerate(cap):
        recs.append({"id": f"{prefix}-cap-{i}", "dataset": dataset, "category": "capital",
                     "context": f"In this story, the capital of {c} is {ctx_ans}. {ctx_ans} is a large city.",
                     "question": f"What is the capital of {c}?", "context_answer": ctx_ans,
                     "parametric_answer": par})
    for i, (p, ctx_ans, par) in enumerate(born):
        recs.append({"id": f"{prefix}-born-{i}", "dataset": dataset, "category": "birthplace",
                     "context": f"{p} was born in {ctx_ans} and grew up there.",
                     "question": f"Where was {p} born?", "context_answer": ctx_ans, "parametric_answer": par})
    return recs
