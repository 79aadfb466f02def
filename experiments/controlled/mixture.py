"""The paper's controlled instruction-finetuning mixture, built from real facts and what a real base knows.

Input: knowledge-conflict items of the shipped sets (``CF_World_Facts``, ``CF_Bio``: real facts, each
with the true answer, a counterfactual answer and a passage stating the counterfactual) and the base's
closed-book table from :func:`fullscale.knowledge.known_facts` (``known`` per item). Output, as data:

* **context-critical** records (``kind = "C"``, fraction ``rho`` of the main records): facts the base
  does *not* know, with a passage stating the **true** answer — the context is the only way to answer;
* **non-context-critical** records (``kind = "CS"``, fraction ``1 - rho``): facts the base knows, with a
  passage that **agrees** with memory (the item's passage with its counterfactual answer replaced by the
  true one), so the answer can come from the context or from memory;
* optional **counterfactual augmentation** (``kind = "CF"``, ``augment_fraction`` of all records): known
  facts with their counterfactual passage, answered from the passage (the paper's mitigation);
* **held-out conflicts**: a ``heldout_fraction`` of the known facts, never used in any record, with
  their counterfactual passage (``ConflictItem`` s as shipped; evaluation and probing read them).

Records are Alpaca-shaped (``instruction``, ``input``, ``output``) with varied instructions and input
layouts (:data:`INSTRUCTIONS`, :data:`INPUT_LAYOUTS`), none of which is the evaluation prompt of
:mod:`fullscale.prompts`, so a rise in context reliance on the held-out set is not a memorised phrasing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cpi.config import Config, check_at_least, check_in_interval
from cpi.errors import CpiError
from experiments.records import cycle, write_alpaca_jsonl
from fullscale.conflicts import ConflictItem, find_word_spans

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Instructions of the finetuning records (the evaluation's "Answer the question based on the
#: background." is deliberately absent).
INSTRUCTIONS: tuple[str, ...] = (
    "Read the passage and answer the question.",
    "Use the text below to answer the question in a few words.",
    "Answer the question using the information given.",
    "Give a short answer to the question, based on the passage.",
    "Here is some text, followed by a question about it. Answer briefly.",
)
#: Layouts of the record's input: ``{c}`` the passage, ``{q}`` the question.
INPUT_LAYOUTS: tuple[str, ...] = (
    "Passage: {c}\nQuestion: {q}",
    "Text: {c}\n\nQ: {q}",
    "{c}\n\nQuestion: {q}",
    "Context: {c}\nQ: {q}\nA:",
)


@dataclass(frozen=True)
class MixtureConfig(Config):
    """Composition of the mixture. ``n_examples`` records in all; ``rho`` of the main (non-augmented)
    records are context-critical (``rho = 1`` is the control with no non-context-critical data);
    ``heldout_fraction`` of the known facts are kept for the conflict evaluation, at least
    ``min_heldout`` of them.

    ``min_known_margin`` (nats) asks for *strong* knowledge: a known fact serves (as a
    non-context-critical record, an augmentation or a held-out conflict) only when the base's
    closed-book log-prob of the true answer beats the best other candidate's by at least this much;
    known facts below it are used nowhere, and context-critical records still come from the unknown
    facts. ``0`` (the default) keeps every fact the base ranks first (their margin is > 0 already)."""

    n_examples: int = 400
    rho: float = 0.5
    augment_fraction: float = 0.0
    heldout_fraction: float = 0.5
    min_heldout: int = 20
    seed: int = 0
    min_known_margin: float = 0.0

    ADDED_LATER = {"min_known_margin": 0.0}

    def validate(self) -> None:
        check_in_interval(self, rho="(0, 1]")
        check_at_least(self, n_examples=1)
        check_in_interval(self, augment_fraction="[0, 1)", heldout_fraction="(0, 1)")
        check_at_least(self, min_heldout=1, min_known_margin=0.0)


@dataclass(frozen=True)
class Mixture:
    """The finetuning records (with ``kind``, ``item_id``, ``category`` for bookkeeping) and the held-out
    conflicts. ``counts``: records per kind, and the numbers of known / unknown / held-out facts."""

    records: list[dict[str, Any]]
    heldout: list[ConflictItem]
    counts: dict[str, int]


def agreeing_context(item: ConflictItem) -> str:
    """The item's passage with every occurrence of its counterfactual answer replaced by the true answer.

    Uses the item's ``context_answer_spans`` when it has them, else every whole-word occurrence;
    overlapping spans (an alias inside the main form: ``"Atlantic"`` in ``"Atlantic Ocean"``) are
    replaced once, as their union.
    """
    spans = sorted(item.context_answer_spans or find_word_spans(item.context, item.context_answer))
    if not spans:
        raise CpiError(f"item {item.id!r}: its context does not contain the context answer {item.context_answer!r}")
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    text = item.context
    for start, end in reversed(merged):
        text = text[:start] + item.parametric_answer + text[end:]
    return text


def _record(item: ConflictItem, context: str, answer: str, kind: str, rng: random.Random) -> dict[str, Any]:
    layout = rng.choice(INPUT_LAYOUTS)
    return {"instruction": rng.choice(INSTRUCTIONS), "input": layout.format(c=context, q=item.question),
            "output": answer, "kind": kind, "item_id": item.id, "category": item.category}


def build_mixture(items: Sequence[ConflictItem], known: "pd.DataFrame", cfg: MixtureConfig) -> Mixture:
    """The mixture of ``cfg`` from ``items`` and the base's ``known`` table (columns ``item_id``, ``known``).

    Only question-answer items are used (quotes have no fact to know). Deterministic in ``cfg.seed``.
    With ``cfg.min_known_margin > 0`` the table also needs ``logp_true`` and ``logp_best_other``, and
    ``counts`` gains ``weak``: the known facts left out for a smaller margin.

    Raises :class:`CpiError` naming the field when the base knows too few facts for the held-out set,
    or when the records of a kind cannot be drawn (no unknown facts for ``rho > 0``, no known facts
    left for ``rho < 1`` or augmentation).
    """
    cfg.validate()
    qa = [it for it in items if it.task == "qa"]
    status = dict(zip(known["item_id"].astype(str), known["known"].astype(bool)))
    missing = [it.id for it in qa if it.id not in status]
    if missing:
        raise CpiError(f"known-facts table: no row for item {missing[0]!r} ({len(missing)} items missing)")
    rng = random.Random(cfg.seed * 1_000_003 + 17)
    known_items = [it for it in qa if status[it.id]]
    unknown_items = [it for it in qa if not status[it.id]]
    weak: list[ConflictItem] = []
    if cfg.min_known_margin > 0:
        strong = _strongly_known(known, cfg.min_known_margin)
        weak = [it for it in known_items if it.id not in strong]
        known_items = [it for it in known_items if it.id in strong]
    rng.shuffle(known_items)
    n_heldout = max(cfg.min_heldout, round(cfg.heldout_fraction * len(known_items)))
    if len(known_items) < n_heldout + (1 if cfg.rho < 1 or cfg.augment_fraction > 0 else 0):
        strength = f" by a margin >= {cfg.min_known_margin:g} nats" if cfg.min_known_margin > 0 else ""
        raise CpiError(f"field 'min_heldout': the base knows {len(known_items)} of {len(qa)} facts{strength}, too "
                       f"few for {n_heldout} held-out conflicts plus finetuning records (lower min_heldout or "
                       f"heldout_fraction{', or min_known_margin' if strength else ''}, or use a base that knows more)")
    heldout, train_known = known_items[:n_heldout], known_items[n_heldout:]
    n_aug = round(cfg.augment_fraction * cfg.n_examples)
    n_main = cfg.n_examples - n_aug
    n_c = round(cfg.rho * n_main)
    n_cs = n_main - n_c
    if n_c and not unknown_items:
        raise CpiError(f"field 'rho': {cfg.rho} asks for {n_c} context-critical records, but the base knows every "
                       "fact, so no fact is unknown to it")
    records = [_record(it, agreeing_context(it), it.parametric_answer, "C", rng)
               for it in cycle(unknown_items, n_c, rng)]
    records += [_record(it, agreeing_context(it), it.parametric_answer, "CS", rng)
                for it in cycle(train_known, n_cs, rng)]
    records += [_record(it, it.context, it.context_answer, "CF", rng) for it in cycle(train_known, n_aug, rng)]
    rng.shuffle(records)
    for i, r in enumerate(records):
        r["id"] = f"ift-{i:05d}"
    counts = {"C": n_c, "CS": n_cs, "CF": n_aug, "known": len(known_items), "unknown": len(unknown_items),
              "heldout": len(heldout), "train_known": len(train_known)}
    if cfg.min_known_margin > 0:
        counts["weak"] = len(weak)
    return Mixture(records=records, heldout=sorted(heldout, key=lambda it: it.id), counts=counts)


def _strongly_known(known: "pd.DataFrame", min_margin: float) -> set[str]:
    """Item ids the base knows with ``logp_true - logp_best_other >= min_margin`` (nats)."""
    lacking = [c for c in ("logp_true", "logp_best_other") if c not in known.columns]
    if lacking:
        raise CpiError(f"known-facts table: column {lacking[0]!r} is needed for min_known_margin > 0")
    margin = known["logp_true"].astype(float) - known["logp_best_other"].astype(float)
    keep = known["known"].astype(bool) & (margin >= min_margin)
    return set(known.loc[keep, "item_id"].astype(str))


def write_records(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Alpaca JSONL (``id``, ``instruction``, ``input``, ``output``), written atomically."""
    return write_alpaca_jsonl(records, path)
