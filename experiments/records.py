"""Instruction-finetuning records shared by the experiments: balanced seeded draws and Alpaca JSONL.

Both the organism's mixture (:mod:`experiments.organism.ift`) and the real-fact mixture
(:mod:`experiments.controlled.mixture`) draw each kind of record from a pool of facts, each fact used
about equally often, and write Alpaca-shaped JSONL that ``cpi finetune`` reads.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence, TypeVar

from cpi.io import atomic_write_text

T = TypeVar("T")

#: The fields of a record that ``cpi finetune`` reads (the rest is bookkeeping).
ALPACA_FIELDS = ("id", "instruction", "input", "output")


def cycle(pool: Sequence[T], n: int, rng: random.Random) -> list[T]:
    """``n`` elements of ``pool``, each used about equally often: whole shuffled copies of the pool, cut at ``n``."""
    out: list[T] = []
    while len(out) < n:
        block = list(pool)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def write_alpaca_jsonl(records: Sequence[dict[str, Any]], path: str | Path,
                       fields: Sequence[str] = ALPACA_FIELDS) -> Path:
    """Write the records' ``fields`` (default :data:`ALPACA_FIELDS`) as JSONL, atomically."""
    lines = [json.dumps({k: r[k] for k in fields}) for r in records]
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")
