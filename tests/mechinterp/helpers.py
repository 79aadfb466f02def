"""Shared helpers for the mechinterp tests: conflict items, tiny checkpoints, trajectories."""

from __future__ import annotations

from pathlib import Path

from fullscale.conflicts import ConflictItem

FACTS = [("Germany", "Lyon", "Berlin"), ("France", "Rome", "Paris"), ("Italy", "Paris", "Rome"),
         ("Poland", "Ulm", "Warsaw"), ("Spain", "Warsaw", "Madrid"), ("Austria", "Madrid", "Vienna")]


def conflict_items(n: int = 6, dataset: str = "CF_Test") -> list[ConflictItem]:
    """Capital-city conflicts with varying context lengths (so batches need padding)."""
    out = []
    for i in range(n):
        country, cf, par = FACTS[i % len(FACTS)]
        extra = " Everyone agrees." * (i % 3)
        out.append(ConflictItem(
            id=f"{dataset}-{i}", dataset=dataset, category="capital" if i % 2 == 0 else "city",
            context=f"In this story the capital of {country} is {cf}.{extra}",
            question=f"What is the capital of {country}?", context_answer=cf, parametric_answer=par))
    return out


def write_jsonl(items: list[ConflictItem], path: Path) -> Path:
    from fullscale.conflicts import items_to_jsonl

    items_to_jsonl(items, path)
    return path


def make_trajectory(root: Path, arch: str = "llama", steps=(10, 20, 30)) -> Path:
    """A Trainer-layout folder with checkpoint-<step>/ tiny models (different random weights)."""
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    tok = make_tokenizer("sp" if arch in ("llama", "mistral") else "bpe")
    for k, s in enumerate(steps):
        make_tiny_checkpoint(root / f"checkpoint-{s}", arch, tokenizer=tok, seed=k)
    return root


def load_tiny(path: Path):
    """(bridge, tokenizer) for a tiny checkpoint folder, float32 CPU."""
    from mechinterp.load import load_bridge

    return load_bridge(path, device="cpu", dtype="float32")
