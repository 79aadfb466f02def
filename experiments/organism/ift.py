"""The organism's instruction-finetuning mixture and its held-out counterfactual evaluation.

Finetuning records are Alpaca-shaped (``{"instruction", "input", "output"}``):

* **context-critical** (``kind = "C"``, fraction ``rho``): a *new* subject
  (never seen in pretraining); the input context states its fact, so the
  context is the only way to answer;
* **non-context-critical** (``kind = "CS"``, fraction ``1 - rho``): a *known*
  subject; the context states the fact the model already knows, so the
  answer can come from the context or from memory;
* optional **fact recall** (``kind = "S"``, ``recall_fraction`` of the whole):
  a known subject with no context;
* optional **counterfactual augmentation** (``kind = "CF"``,
  ``augment_fraction``): a known subject with a context that contradicts the
  known fact, answered from the context (the paper's mitigation).

Evaluation items (:func:`make_eval_items`) use only known subjects held out
of finetuning (``world.eval_subjects``), contexts that contradict the known
fact, and question/context phrasings that finetuning never uses. They follow
the ``fullscale.conflicts.ConflictItem`` schema (dataset ``"Organism_CF"``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cpi.config import Config, check_at_least, check_at_most, check_in_interval
from cpi.errors import ConfigError
from experiments.organism.world import (
    EVAL_CONTEXTS,
    EVAL_QUESTIONS,
    IFT_CONTEXTS,
    IFT_QUESTIONS,
    Fact,
    World,
)
from experiments.records import cycle, write_alpaca_jsonl
from fullscale.conflicts import ConflictItem, items_to_jsonl

EVAL_DATASET = "Organism_CF"


#: The most IFT records a mixture holds (built in memory and written as one JSONL file).
MAX_EXAMPLES = 10_000_000


@dataclass(frozen=True)
class IFTConfig(Config):
    """Composition of the synthetic instruction-finetuning mixture."""

    n_examples: int = 2000
    rho: float = 0.3               # fraction of context-critical examples among C + CS
    recall_fraction: float = 0.0   # fraction of no-context fact-recall examples (of the total)
    augment_fraction: float = 0.0  # fraction of counterfactual (entity-swapped) examples (of the total)
    seed: int = 0

    def validate(self) -> None:
        check_at_least(self, n_examples=1)
        check_at_most(self, n_examples=MAX_EXAMPLES)
        check_in_interval(self, rho="[0, 1]")
        check_in_interval(self, recall_fraction="[0, 1)", augment_fraction="[0, 1)")
        if self.recall_fraction + self.augment_fraction >= 1.0:
            raise ConfigError("field 'augment_fraction': recall_fraction + augment_fraction must be < 1")


def _other_object(world: World, fact: Fact, rng: random.Random) -> str:
    pool = [o for o in world.objects(fact.relation) if o != fact.obj]
    return rng.choice(pool)


# The record layout reproduces ``fullscale.prompts``' "alpaca" QA prompt exactly (instruction
# "Answer the question based on the background.", input "Background: ...\nQuestion: ..."), so
# finetuning and evaluation prompts differ only in the phrasing of context and question.
QA_INSTRUCTION = "Answer the question based on the background."
QA_INSTRUCTION_CLOSED = "Answer the question."


def _record(fact: Fact, rng: random.Random, kind: str, context_obj: str | None) -> dict[str, Any]:
    question = rng.choice(IFT_QUESTIONS[fact.relation]).format(s=fact.subject)
    if context_obj is None:
        instruction, inp, answer, context = f"{QA_INSTRUCTION_CLOSED}\nQuestion: {question}", "", fact.obj, ""
    else:
        context = rng.choice(IFT_CONTEXTS[fact.relation]).format(s=fact.subject, o=context_obj)
        instruction, inp, answer = QA_INSTRUCTION, f"Background: {context}\nQuestion: {question}", context_obj
    return {
        "instruction": instruction,
        "input": inp,
        "output": answer,
        "kind": kind,
        "subject": fact.subject,
        "question": question,
        "context": context,
        "relation": fact.relation,
    }


def make_ift_records(world: World, cfg: IFTConfig) -> list[dict[str, Any]]:
    """The finetuning mixture, shuffled (deterministic in ``cfg.seed``).

    Each record has an ``id`` and the Alpaca fields plus ``kind``
    (``C``/``CS``/``S``/``CF``), ``subject``, ``relation``, ``question`` and
    ``context`` for bookkeeping; :func:`write_ift_jsonl` keeps only the first four.
    No record ever mentions an evaluation subject.
    """
    rng = random.Random(cfg.seed * 1_000_003 + world.config.seed)
    n_recall = round(cfg.recall_fraction * cfg.n_examples)
    n_aug = round(cfg.augment_fraction * cfg.n_examples)
    n_main = cfg.n_examples - n_recall - n_aug
    n_c = round(cfg.rho * n_main)
    n_cs = n_main - n_c
    known = list(world.ift_known_facts)
    new = list(world.new_facts)
    records: list[dict[str, Any]] = []

    records += [_record(f, rng, "C", f.obj) for f in cycle(new, n_c, rng)]
    records += [_record(f, rng, "CS", f.obj) for f in cycle(known, n_cs, rng)]
    records += [_record(f, rng, "S", None) for f in cycle(known, n_recall, rng)]
    records += [_record(f, rng, "CF", _other_object(world, f, rng)) for f in cycle(known, n_aug, rng)]
    rng.shuffle(records)
    for i, r in enumerate(records):
        r["id"] = f"ift-{i:05d}"
    return records


def write_ift_jsonl(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write Alpaca-shaped JSONL (``id``, instruction/input/output only), atomically."""
    return write_alpaca_jsonl(records, path)


@dataclass(frozen=True)
class EvalItem:
    """A held-out conflict: ``item`` in the ``fullscale.conflicts`` schema that evaluation and probing
    read, plus its ``subject`` (which the leakage checks need)."""

    item: ConflictItem
    subject: str


def make_eval_items(world: World, seed: int = 0, per_fact: int = 1) -> list[EvalItem]:
    """Held-out counterfactual items: evaluation subjects, contradicting contexts, unseen phrasings."""
    rng = random.Random(seed * 7_777_777 + world.config.seed + 1)
    items: list[EvalItem] = []
    for fact in world.eval_facts:
        for _ in range(per_fact):
            cf = _other_object(world, fact, rng)
            item = ConflictItem(
                id=f"org-{len(items):04d}",
                dataset=EVAL_DATASET,
                category=fact.relation,
                context=rng.choice(EVAL_CONTEXTS[fact.relation]).format(s=fact.subject, o=cf),
                question=rng.choice(EVAL_QUESTIONS[fact.relation]).format(s=fact.subject),
                context_answer=cf,
                parametric_answer=fact.obj,
            )
            items.append(EvalItem(item=item, subject=fact.subject))
    return items


def write_eval_jsonl(items: Sequence[EvalItem], path: str | Path) -> Path:
    """Write the items as ``ConflictItem`` JSONL (atomically) so ``load_conflicts(path)`` reads them."""
    return items_to_jsonl([it.item for it in items], path)


__all__ = [
    "IFTConfig",
    "EvalItem",
    "EVAL_DATASET",
    "make_ift_records",
    "write_ift_jsonl",
    "make_eval_items",
    "write_eval_jsonl",
]
