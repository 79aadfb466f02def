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
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from cpi.config import Config, check_at_least, check_in_interval
from cpi.errors import ConfigError, CpiError
from experiments.controlled.designs import (DESIGNS, RELATIONS, answer_pools, design_record, nonce_names,
                                            relation_of, subject_of)
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


#: The most records a mixture may hold, and the measured memory per record (mean 2.1 KiB, max 2.6 KiB on
#: the shipped CF_World_Facts + CF_Bio records; about 1 KiB each as JSONL): the size guard of ``n_examples``.
MAX_EXAMPLES = 1_000_000
RECORD_BYTES = 2_200


@dataclass(frozen=True)
class MixtureConfig(Config):
    """Composition of the mixture. ``n_examples`` records in all; ``rho`` of the main (non-augmented,
    non-control) records are context-critical (``rho = 1`` is the control with no non-context-critical
    data); ``heldout_fraction`` of the known facts are kept for the conflict evaluation, at least
    ``min_heldout`` of them.

    ``min_known_margin`` (nats) asks for *strong* knowledge: a known fact serves (as a
    non-context-critical record, an augmentation or a held-out conflict) only when the base's
    closed-book log-prob of the true answer beats the best other candidate's by at least this much;
    known facts below it are used nowhere, and context-critical records still come from the unknown
    facts. ``0`` (the default) keeps every fact the base ranks first (their margin is > 0 already).

    Passage designs (:mod:`.designs`; every default reproduces the original mixture and its content key):

    * ``design``: the non-context-critical records' passage: ``dataset`` (the shipped passage made to
      agree with memory), ``verbatim`` (a one-line statement of the fact: outside the theory's regime)
      or ``distractors`` (the answer among ``n_distractors`` same-relation candidates, the relation
      stated indirectly: inside it on strongly known facts). With ``verbatim`` / ``distractors`` every
      record is written from a template of its relation (:data:`~.designs.RELATIONS`) with a training
      question form, only facts of ``relations`` are trained on, context-critical (and augmentation /
      positive-control) passages are verbatim, and held-out conflicts keep their shipped passage and
      question: disjoint from training in entity, passage template and question form.
    * ``nonce_context_critical``: context-critical records about made-up subjects (the base's memory
      is at chance on them) instead of facts it does not know (template designs only).
    * ``unseen_heldout``: that many known facts of relations *not* in ``relations`` join the held-out
      conflicts (a conflict set never used in training; template designs only).
    * ``positive_control_fraction``: a fraction in (0, 1) of all records that are known facts with a
      *contradicting* passage and the **memory** answer as target (``kind = "PC"``): a planted push
      away from the context, to check that the pipeline sees a fall. Not the paper's mechanism.
    * ``positive_control_start``: a fraction in (0, 1): the positive-control records come only after
      this share of the records, in the written order (the first part holds none of them; the rest
      holds all of them, shuffled with the remaining records): a **second phase**, which the finetuning
      driver keeps only with ``finetune.data_order: sequential``. None (default): mixed in everywhere.
    * ``delta_c_band``: ``[lo, hi]``: the non-context-critical records are selected on the base, among
      ``band_pool`` candidates per record (distractors, their order and the wording drawn afresh), as those
      whose measured ``delta_C`` lies in the band with ``delta_M > 2 delta_C``: the records where the
      theory's simulator predicts a fall (:mod:`.selection`; ``distractors`` design only). None (default):
      no selection.
    """

    n_examples: int = 400
    rho: float = 0.5
    augment_fraction: float = 0.0
    heldout_fraction: float = 0.5
    min_heldout: int = 20
    seed: int = 0
    min_known_margin: float = 0.0
    design: str = "dataset"
    relations: tuple[str, ...] = ("capital",)
    n_distractors: int = 2
    nonce_context_critical: bool = False
    unseen_heldout: int = 0
    positive_control_fraction: Optional[float] = None
    positive_control_start: Optional[float] = None
    delta_c_band: Optional[tuple[float, ...]] = None
    band_pool: int = 10

    ADDED_LATER = {"min_known_margin": 0.0, "design": "dataset", "relations": ("capital",), "n_distractors": 2,
                   "nonce_context_critical": False, "unseen_heldout": 0, "positive_control_fraction": None,
                   "positive_control_start": None, "delta_c_band": None, "band_pool": 10}

    def validate(self) -> None:
        check_in_interval(self, rho="(0, 1]")
        check_at_least(self, n_examples=1)
        if self.n_examples > MAX_EXAMPLES:  # the size guard: refused before any knowledge table or training
            raise ConfigError(
                f"field 'n_examples': {self.n_examples:,} records would take about "
                f"{self.n_examples * RECORD_BYTES / 2**30:,.0f} GiB in memory (the mixture is built in memory and "
                f"written as one JSONL file, then finetuned on); must be <= {MAX_EXAMPLES:,}")
        check_in_interval(self, augment_fraction="[0, 1)", heldout_fraction="(0, 1)")
        check_at_least(self, min_heldout=1, min_known_margin=0.0, n_distractors=1, unseen_heldout=0)
        if self.design not in DESIGNS:
            raise ConfigError(f"field 'design': must be one of {', '.join(DESIGNS)}, got {self.design!r}")
        if not self.relations:
            raise ConfigError("field 'relations': give at least one relation")
        for rel in self.relations:
            if rel not in RELATIONS:
                raise ConfigError(f"field 'relations': {rel!r} has no passage design (known: {', '.join(RELATIONS)})")
        if self.design == "dataset":
            for name in ("nonce_context_critical", "unseen_heldout"):
                if getattr(self, name):
                    raise ConfigError(f"field '{name}': needs a template design (design: verbatim or distractors)")
        if self.positive_control_fraction is not None:
            check_in_interval(self, positive_control_fraction="(0, 1)")
            if self.positive_control_fraction + self.augment_fraction >= 1:
                raise ConfigError(f"field 'positive_control_fraction': with augment_fraction "
                                  f"{self.augment_fraction} it leaves no main records")
        if self.positive_control_start is not None:
            check_in_interval(self, positive_control_start="(0, 1)")
            if self.positive_control_fraction is None:
                raise ConfigError("field 'positive_control_start': needs positive_control_fraction")
            if self.positive_control_fraction > 1 - self.positive_control_start:
                raise ConfigError(f"field 'positive_control_start': {self.positive_control_start} leaves "
                                  f"{1 - self.positive_control_start:.3g} of the records for the second phase, less "
                                  f"than positive_control_fraction {self.positive_control_fraction}")
        check_at_least(self, band_pool=1)
        if self.delta_c_band is not None:
            band = self.delta_c_band
            if len(band) != 2 or not 0 <= band[0] < band[1] <= 1:
                raise ConfigError(f"field 'delta_c_band': give [lo, hi] with 0 <= lo < hi <= 1, got {list(band)}")
            if self.design != "distractors":
                raise ConfigError("field 'delta_c_band': selects among distractor passages (design: distractors), "
                                  f"got design {self.design!r}")

    @classmethod
    def content_of(cls, data: Any) -> dict[str, Any]:
        """As :meth:`Config.content_of`, plus the version of the written records' format
        (:data:`RECORDS_FORMAT`), so folders written before records carried their split are rebuilt."""
        return {**super().content_of(data), "records_format": RECORDS_FORMAT}


#: Version of the records :func:`write_records` writes (2: ``context`` and ``question`` beside the
#: Alpaca fields). Part of :class:`MixtureConfig`'s content key.
RECORDS_FORMAT = 2
#: The fields of a record written to ``ift.jsonl``: the Alpaca fields and the input's split.
WRITTEN_FIELDS = ("id", "instruction", "input", "output", "context", "question")


@dataclass(frozen=True)
class Mixture:
    """The finetuning records and the held-out conflicts. ``counts``: records per kind (``C``, ``CS``,
    ``CF``, ``PC``), and the numbers of known / unknown / held-out facts.

    A record holds the Alpaca fields (``instruction``, ``input``, ``output``), the input's split
    (``context``: the passage; ``question``: the question, subject included), and bookkeeping:
    ``kind``, ``item_id`` (the fact; ``nonce-<n>`` for a made-up subject), ``category``, ``subject``
    (None where it cannot be found), ``distractors`` (the other candidates named in the passage)."""

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


def _record(context: str, question: str, answer: str, kind: str, rng: random.Random, item_id: str,
            category: str, subject: str | None, distractors: Sequence[str] = ()) -> dict[str, Any]:
    layout = rng.choice(INPUT_LAYOUTS)
    return {"instruction": rng.choice(INSTRUCTIONS), "input": layout.format(c=context, q=question),
            "output": answer, "context": context, "question": question, "kind": kind, "item_id": item_id,
            "category": category, "subject": subject, "distractors": list(distractors)}


def _dataset_record(item: ConflictItem, context: str, answer: str, kind: str, rng: random.Random) -> dict[str, Any]:
    subject = subject_of(item) if item.category in RELATIONS else None
    return _record(context, item.question, answer, kind, rng, item.id, item.category, subject)


def build_mixture(items: Sequence[ConflictItem], known: "pd.DataFrame", cfg: MixtureConfig,
                  select: Optional[Callable[[list[dict[str, Any]]], list[bool]]] = None) -> Mixture:
    """The mixture of ``cfg`` from ``items`` and the base's ``known`` table (columns ``item_id``, ``known``).

    ``select`` (needed with ``cfg.delta_c_band``, :class:`~.selection.BandSelector`): given the candidate
    non-context-critical records, which to keep; the first ``n_CS`` kept, in the drawn order, are used.

    Only question-answer items are used (quotes have no fact to know). Deterministic in ``cfg.seed``.
    With ``cfg.min_known_margin > 0`` the table also needs ``logp_true`` and ``logp_best_other``, and
    ``counts`` gains ``weak``: the known facts left out for a smaller margin.

    Raises :class:`CpiError` naming the field when the base knows too few facts for the held-out set,
    or when the records of a kind cannot be drawn (no unknown facts for ``rho > 0``, no known facts
    left for ``rho < 1``, augmentation or the positive control, too few known facts of other relations
    for ``unseen_heldout``, no fact of ``relations`` at all).
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
    templated = cfg.design != "dataset"
    unseen: list[ConflictItem] = []
    if templated:
        trained = set(cfg.relations)
        if not any(it.category in trained for it in qa):
            raise CpiError(f"field 'relations': no question-answer fact of {', '.join(cfg.relations)} among the "
                           f"{len(qa)} facts (add its conflict set to knowledge.datasets)")
        unseen = [it for it in known_items if it.category not in trained]
        known_items = [it for it in known_items if it.category in trained]
        unknown_items = [it for it in unknown_items if it.category in trained]
    rng.shuffle(known_items)
    n_aug = round(cfg.augment_fraction * cfg.n_examples)
    n_pc = round((cfg.positive_control_fraction or 0.0) * cfg.n_examples)
    n_main = cfg.n_examples - n_aug - n_pc
    n_c = round(cfg.rho * n_main)
    n_cs = n_main - n_c
    n_heldout = max(cfg.min_heldout, round(cfg.heldout_fraction * len(known_items)))
    if len(known_items) < n_heldout + (1 if n_cs or n_aug or n_pc else 0):
        strength = f" by a margin >= {cfg.min_known_margin:g} nats" if cfg.min_known_margin > 0 else ""
        scope = f" of {', '.join(cfg.relations)}" if templated else ""
        raise CpiError(f"field 'min_heldout': the base knows {len(known_items)}{scope} of {len(qa)} facts{strength}, "
                       f"too few for {n_heldout} held-out conflicts plus finetuning records (lower min_heldout or "
                       f"heldout_fraction{', or min_known_margin' if strength else ''}, or use a base that knows more)")
    heldout, train_known = known_items[:n_heldout], known_items[n_heldout:]
    if cfg.unseen_heldout:
        if len(unseen) < cfg.unseen_heldout:
            raise CpiError(f"field 'unseen_heldout': {cfg.unseen_heldout} held-out facts of relations other than "
                           f"{', '.join(cfg.relations)} asked for, the base knows {len(unseen)}")
        heldout = heldout + rng.sample(sorted(unseen, key=lambda it: it.id), cfg.unseen_heldout)
    if n_c and not unknown_items and not (templated and cfg.nonce_context_critical):
        raise CpiError(f"field 'rho': {cfg.rho} asks for {n_c} context-critical records, but the base knows every "
                       "fact" + (f" of {', '.join(cfg.relations)}" if templated else "") + ", so no fact is unknown "
                       "to it" + (" (or set nonce_context_critical)" if templated else ""))
    if templated:
        records = _templated_records(cfg, qa, heldout, unknown_items, train_known, (n_c, n_cs, n_aug, n_pc), rng,
                                     select)
    else:
        records = [_dataset_record(it, agreeing_context(it), it.parametric_answer, "C", rng)
                   for it in cycle(unknown_items, n_c, rng)]
        records += [_dataset_record(it, agreeing_context(it), it.parametric_answer, "CS", rng)
                    for it in cycle(train_known, n_cs, rng)]
        records += [_dataset_record(it, it.context, it.context_answer, "CF", rng)
                    for it in cycle(train_known, n_aug, rng)]
        records += [_dataset_record(it, it.context, it.parametric_answer, "PC", rng)
                    for it in cycle(train_known, n_pc, rng)]
    rng.shuffle(records)
    if cfg.positive_control_start is not None:
        records = _second_phase(records, cfg.positive_control_start, rng)
    for i, r in enumerate(records):
        r["id"] = f"ift-{i:05d}"
    counts = {"C": n_c, "CS": n_cs, "CF": n_aug, "known": len(known_items), "unknown": len(unknown_items),
              "heldout": len(heldout), "train_known": len(train_known)}
    if n_pc:
        counts["PC"] = n_pc
    if cfg.unseen_heldout:
        counts["unseen_heldout"] = cfg.unseen_heldout
    if cfg.min_known_margin > 0:
        counts["weak"] = len(weak)
    return Mixture(records=records, heldout=sorted(heldout, key=lambda it: it.id), counts=counts)


def _templated_records(cfg: MixtureConfig, qa: Sequence[ConflictItem], heldout: Sequence[ConflictItem],
                       unknown_items: Sequence[ConflictItem], train_known: Sequence[ConflictItem],
                       sizes: tuple[int, int, int, int], rng: random.Random,
                       select: Optional[Callable[[list[dict[str, Any]]], list[bool]]] = None) -> list[dict[str, Any]]:
    """The records of a template design (``verbatim`` / ``distractors``): C, CS, CF and PC records
    (the CS records selected by ``select`` among ``band_pool`` candidates each with ``delta_c_band``).

    Distractors and nonce answers are drawn from the relation's answers, never a held-out fact's."""
    n_c, n_cs, n_aug, n_pc = sizes
    out_of_bounds = {a.casefold() for it in heldout for a in (*it.accepted_parametric, *it.accepted_context)}
    pools = {cat: [a for a in pool if a.casefold() not in out_of_bounds] for cat, pool in answer_pools(qa).items()}

    def make(it: ConflictItem, design: str, answer: str, stated: str, kind: str) -> dict[str, Any]:
        where = f"item {it.id!r}"
        rel = relation_of(it.category, where)
        d = design_record(design, rel, subject_of(it), stated, (*it.accepted_parametric, *it.accepted_context),
                          pools.get(it.category, []), cfg.n_distractors, rng, f"field 'n_distractors': {where}")
        return _record(d["context"], d["question"], answer, kind, rng, it.id, it.category, d["subject"],
                       d["distractors"])

    records: list[dict[str, Any]] = []
    if cfg.nonce_context_critical:
        names = nonce_names(n_c, rng, avoid=[subject_of(it) for it in qa if it.category in RELATIONS])
        for k, name in enumerate(names):
            rel = RELATIONS[cfg.relations[k % len(cfg.relations)]]
            pool = pools.get(rel.category, [])
            if not pool:
                raise CpiError(f"field 'relations': no answer of {rel.category!r} left to state about a nonce subject")
            answer = rng.choice(pool)
            d = design_record("verbatim", rel, name, answer, (answer,), pool, cfg.n_distractors, rng, "nonce")
            records.append(_record(d["context"], d["question"], answer, "C", rng, f"nonce-{k:04d}", rel.category,
                                   name))
    else:
        records += [make(it, "verbatim", it.parametric_answer, it.parametric_answer, "C")
                    for it in cycle(unknown_items, n_c, rng)]
    if cfg.delta_c_band is None:
        records += [make(it, cfg.design, it.parametric_answer, it.parametric_answer, "CS")
                    for it in cycle(train_known, n_cs, rng)]
    elif n_cs:
        records += _selected(cfg, [make(it, cfg.design, it.parametric_answer, it.parametric_answer, "CS")
                                   for it in cycle(train_known, n_cs * cfg.band_pool, rng)], n_cs, select)
    records += [make(it, "verbatim", it.context_answer, it.context_answer, "CF") for it in cycle(train_known, n_aug, rng)]
    records += [make(it, "verbatim", it.parametric_answer, it.context_answer, "PC") for it in cycle(train_known, n_pc, rng)]
    return records


def _selected(cfg: MixtureConfig, pool: list[dict[str, Any]], n: int,
              select: Optional[Callable[[list[dict[str, Any]]], list[bool]]]) -> list[dict[str, Any]]:
    """The first ``n`` records of ``pool`` that ``select`` keeps (``cfg.delta_c_band``)."""
    lo, hi = cfg.delta_c_band
    if select is None:
        raise CpiError("field 'delta_c_band': selecting records by their measured delta_C needs the base model "
                       "(the controlled experiment's mixture stage measures them)")
    keep = select(pool)
    chosen = [r for r, k in zip(pool, keep) if k]
    if len(chosen) < n:
        raise CpiError(f"field 'delta_c_band': {len(chosen)} of {len(pool)} candidate records have delta_C in "
                       f"[{lo:g}, {hi:g}] with delta_M > 2 delta_C on this base, {n} needed (widen the band or "
                       f"raise mixture.band_pool)")
    return chosen[:n]


def _strongly_known(known: "pd.DataFrame", min_margin: float) -> set[str]:
    """Item ids the base knows with ``logp_true - logp_best_other >= min_margin`` (nats)."""
    lacking = [c for c in ("logp_true", "logp_best_other") if c not in known.columns]
    if lacking:
        raise CpiError(f"known-facts table: column {lacking[0]!r} is needed for min_known_margin > 0")
    margin = known["logp_true"].astype(float) - known["logp_best_other"].astype(float)
    keep = known["known"].astype(bool) & (margin >= min_margin)
    return set(known.loc[keep, "item_id"].astype(str))


def _second_phase(records: list[dict[str, Any]], start: float, rng: random.Random) -> list[dict[str, Any]]:
    """``records`` reordered so that the positive-control ones (``kind == "PC"``) all come after the first
    ``round(start * len(records))``: the first part is other records in their order, the rest the
    remaining records and every positive-control record, shuffled."""
    first = round(start * len(records))
    others = [r for r in records if r["kind"] != "PC"]
    rest = others[first:] + [r for r in records if r["kind"] == "PC"]
    rng.shuffle(rest)
    return others[:first] + rest


def write_records(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """JSONL of the records' :data:`WRITTEN_FIELDS` (the Alpaca fields that ``cpi finetune`` reads and
    the input's split, ``context`` and ``question``, that its filter reads), written atomically."""
    return write_alpaca_jsonl(records, path, fields=WRITTEN_FIELDS)
