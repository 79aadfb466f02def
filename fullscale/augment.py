"""Counterfactual augmentation: entity-swapped context-QA examples mixed into IFT data.

The paper (§6, after Longpre et al. 2022) mixes entity-substituted QA examples
into the IFT data (10% for Alpaca, 1% for TULU): the context asserts an answer
that contradicts what the model knows, and the target is the context's answer,
which pushes against the late-phase shift to parametric answers.

:func:`generate_counterfactual_examples` builds such examples from the shipped
or user-supplied knowledge-conflict sets: for each QA item it replaces every
whole-word occurrence of the context answer in the passage by *another* answer
of the same dataset and category (taken from the other items' context and
parametric answers, never one of this item's own answers), and makes the new
answer the target. The prompt is the evaluation's Alpaca QA shape
(``instruction`` = "Answer the question based on the background.",
``input`` = "Background: ...\\nQuestion: ...").

Evaluation items never feed the generator: an item is excluded if its id is
an evaluation id, or if its context - lower-cased, whitespace-collapsed, with
all of its answers masked - equals an evaluation item's (so a copy of an
evaluation passage under another id, or with another answer, is excluded too).
:func:`find_leaks` re-checks the output and :func:`augment_data` refuses to
write anything that leaks. :func:`run_augment` (``cpi data augment``) does it for one data file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

from cpi.config import Config, check_in_interval
from cpi.errors import ConfigError, CpiError

if TYPE_CHECKING:  # pragma: no cover
    from fullscale.conflicts import ConflictItem
    from fullscale.ift_data import IFTExample

log = logging.getLogger(__name__)

MASK = "<ans>"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def context_key(item: "ConflictItem") -> str:
    """The item's context, lower-cased and whitespace-collapsed, with every accepted answer
    (context and parametric side) masked: equal keys = the same passage up to the answer."""
    from fullscale.conflicts import find_word_spans

    text = item.context
    answers = sorted({a for a in (*item.accepted_context, *item.accepted_parametric) if a.strip()}, key=len,
                     reverse=True)
    for ans in answers:
        for a, b in reversed(find_word_spans(text, ans)):
            text = text[:a] + MASK + text[b:]
    return _norm(text)


def load_items(sources: Iterable[str]) -> list["ConflictItem"]:
    """Items of every source (shipped name or JSONL path)."""
    from fullscale.conflicts import load_conflicts

    return [it for src in sources for it in load_conflicts(src)]


def split_excluded(items: Sequence["ConflictItem"], eval_items: Sequence["ConflictItem"]
                   ) -> tuple[list["ConflictItem"], list["ConflictItem"]]:
    """``(usable, excluded)``: excluded = same id as, or same :func:`context_key` as, an evaluation item."""
    eval_ids = {it.id for it in eval_items}
    eval_keys = {context_key(it) for it in eval_items}
    eval_ctx = {_norm(it.context) for it in eval_items}
    usable, excluded = [], []
    for it in items:
        if it.id in eval_ids or _norm(it.context) in eval_ctx or context_key(it) in eval_keys:
            excluded.append(it)
        else:
            usable.append(it)
    return usable, excluded


def generate_counterfactual_examples(sources: Sequence[str], exclude: Sequence[str] = (), seed: int = 0,
                                     variants_per_item: int = 1, tasks: Sequence[str] = ("qa",)
                                     ) -> list["IFTExample"]:
    """Entity-swapped Alpaca-shaped QA examples from the conflict sets ``sources``.

    ``exclude``: evaluation sets (names or files) whose items must not be used
    (see module docstring). ``variants_per_item``: up to this many different
    replacement answers per item. Items whose context does not contain their
    context answer, or whose (dataset, category) offers no other answer, are
    skipped. Ids are ``aug-<item id>-<k>``; ``meta`` records the source item,
    its original answer and the swapped-in answer. Deterministic in ``seed``.
    """
    from fullscale.conflicts import answer_spans
    from fullscale.ift_data import IFTExample
    from fullscale.prompts import QA_INSTRUCTION

    if variants_per_item < 1:
        raise CpiError(f"variants_per_item must be >= 1, got {variants_per_item}")
    items = [it for it in load_items(sources) if it.task in tasks]
    eval_items = load_items(exclude)
    usable, excluded = split_excluded(items, eval_items)
    if excluded:
        log.info("augmentation: %d source items excluded as evaluation items", len(excluded))
    pool: dict[tuple[str, str], list[str]] = {}
    for it in items:  # answers (not passages) of all items may serve as replacements
        pool.setdefault((it.dataset, it.category), []).extend([it.context_answer, it.parametric_answer])
    rng = random.Random(seed)
    out: list[IFTExample] = []
    skipped = 0
    for it in usable:
        own = {_norm(a) for a in (*it.accepted_context, *it.accepted_parametric)}
        spans = answer_spans(it.context, it.accepted_context)
        # drop overlapping spans (an alias inside the main answer)
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a < merged[-1][1]:
                if b - a > merged[-1][1] - merged[-1][0]:
                    merged[-1] = (a, b)
                continue
            merged.append((a, b))
        text_lower = _norm(it.context + " " + it.question)
        cands = sorted({c for c in pool.get((it.dataset, it.category), [])
                        if c.strip() and _norm(c) not in own and not re.search(rf"(?<!\w){re.escape(_norm(c))}(?!\w)",
                                                                                 text_lower)})
        if not merged or not cands:
            skipped += 1
            continue
        for k, new in enumerate(rng.sample(cands, min(variants_per_item, len(cands)))):
            ctx = it.context
            for a, b in reversed(merged):
                ctx = ctx[:a] + new + ctx[b:]
            out.append(IFTExample(
                id=f"aug-{it.id}-{k}", instruction=QA_INSTRUCTION, input=f"Background: {ctx}\nQuestion: {it.question}",
                output=new, where=f"augment:{it.dataset}:{it.id}",
                meta={"augment_source": it.dataset, "augment_item": it.id, "augment_category": it.category,
                      "augment_original_answer": it.context_answer, "augment_answer": new},
            ))
    if skipped:
        log.info("augmentation: %d items skipped (answer not in context, or no other answer in category)", skipped)
    leaks = find_leaks(out, eval_items)
    if leaks:
        raise CpiError(f"augmentation would leak evaluation items: {leaks[0]}")
    return out


def find_leaks(augmented: Sequence["IFTExample"], eval_items: Sequence["ConflictItem"]) -> list[str]:
    """Problems if any augmented example comes from an evaluation item (by id) or contains an
    evaluation item's context (whole passage, or the passage with its answers masked)."""
    eval_ids = {it.id for it in eval_items}
    eval_ctx = [(it.id, _norm(it.context)) for it in eval_items]
    eval_keys = {context_key(it): it.id for it in eval_items}
    problems = []
    for ex in augmented:
        src = str(ex.meta.get("augment_item", ""))
        if src in eval_ids:
            problems.append(f"{ex.id}: generated from evaluation item {src!r}")
            continue
        body = _norm(ex.input)
        hit = next((eid for eid, c in eval_ctx if c and c in body), None)
        if hit is not None:
            problems.append(f"{ex.id}: contains the context of evaluation item {hit!r}")
            continue
        masked = _norm(ex.input.rsplit("\nQuestion: ", 1)[0].removeprefix("Background: "))
        new = str(ex.meta.get("augment_answer", ""))
        if new:
            masked = re.sub(rf"(?<!\w){re.escape(_norm(new))}(?!\w)", MASK, masked)
        if masked in eval_keys:
            problems.append(f"{ex.id}: same passage as evaluation item {eval_keys[masked]!r} up to the answer")
    return problems


def n_augment_for(n_examples: int, fraction: float) -> int:
    """How many augmented examples make up ``fraction`` of the mixed set with ``n_examples`` originals."""
    if not 0 <= fraction < 1:
        raise CpiError(f"augmentation fraction must be in [0, 1), got {fraction}")
    return int(round(fraction * n_examples / (1 - fraction)))


def mix_augmentation(examples: Sequence["IFTExample"], augmented: Sequence["IFTExample"], fraction: float,
                     seed: int = 0) -> tuple[list["IFTExample"], int]:
    """Mix augmented examples into ``examples`` so they make up ``fraction`` of the result.

    Returns ``(mixed, n_augmented)``; the mixed list is shuffled with ``seed``.
    Too few augmented examples, or an id clash, raise :class:`CpiError`.
    """
    need = n_augment_for(len(examples), fraction)
    if need == 0:
        return list(examples), 0
    if need > len(augmented):
        raise CpiError(f"augmentation fraction {fraction} needs {need} examples but the conflict sets yield "
                       f"{len(augmented)}; lower the fraction or add conflict sets")
    rng = random.Random(seed)
    chosen = rng.sample(list(augmented), need)
    ids = {ex.id for ex in examples}
    clash = next((ex.id for ex in chosen if ex.id in ids), None)
    if clash is not None:
        raise CpiError(f"augmented example id {clash!r} clashes with an IFT example id")
    mixed = list(examples) + chosen
    rng.shuffle(mixed)
    return mixed, need


def augment_data(examples: Sequence["IFTExample"], sources: Sequence[str], exclude: Sequence[str], fraction: float,
                 seed: int = 0) -> tuple[list["IFTExample"], int]:
    """Generate enough counterfactual examples for ``fraction`` (more variants per item when
    needed) and mix them in; returns ``(mixed, n_augmented)``."""
    need = n_augment_for(len(examples), fraction)
    if need == 0:
        return list(examples), 0
    aug = generate_counterfactual_examples(sources, exclude, seed=seed, variants_per_item=1)
    if 0 < len(aug) < need:
        aug = generate_counterfactual_examples(sources, exclude, seed=seed,
                                               variants_per_item=math.ceil(need / len(aug)) + 1)
    return mix_augmentation(examples, aug, fraction, seed)


@dataclasses.dataclass(frozen=True)
class AugmentConfig(Config):
    """What ``cpi data augment`` runs (its flags are these fields)."""

    conflicts: tuple[str, ...] = ()
    "conflict sets to generate from (shipped names or JSONL files)"
    exclude: tuple[str, ...] = ()
    "evaluation sets whose items must not be used"
    fraction: float = 0.1
    "share of augmented examples in the output"
    data: str = ""
    "IFT data to augment"
    out: str = "augmented.jsonl"
    "output JSONL"
    seed: int = 0
    "seed of the swaps and the mixing"
    data_format: Literal["auto", "alpaca", "tulu", "ultrachat"] = "auto"
    "record format of the data file"

    def validate(self) -> None:
        check_in_interval(self, fraction="[0, 1)")
        if not self.conflicts:
            raise ConfigError("field 'conflicts': give at least one conflict set (shipped name or JSONL file)")


def run_augment(config: AugmentConfig) -> tuple[Path, int, int]:
    """Mix counterfactual examples into ``config.data`` and write ``config.out`` (``cpi data augment``);
    returns ``(out, n_original_examples, n_augmented)``. Nothing is written if an input is bad or leaks."""
    from cpi.io import check_input_file, check_out_file
    from fullscale.ift_data import load_ift_data, write_ift_jsonl

    out = check_out_file(config.out)
    if Path(config.data).exists() and Path(config.data).suffix != ".parquet":
        check_input_file(config.data, "--data")  # Parquet is binary by design
    examples = load_ift_data(config.data, config.data_format)
    mixed, n_aug = augment_data(examples, list(config.conflicts), list(config.exclude), config.fraction, config.seed)
    write_ift_jsonl(mixed, config.out)
    return out, len(examples), n_aug
