"""Passage designs for the controlled mixture: where a record sits in the theory's regime is a choice of passage.

The theory's fall needs non-context-critical (C+S) records whose memory predicts the answer better
than their context (delta_M > 2 delta_C, ``docs/theory.md``). Which side of that line a record of a
*real* model lands on is decided by its passage (``../shared/regime-pilot.md``): a verbatim statement
("The capital of Veltoria is Lyon.") makes the context the better predictor (delta_C ~ 1, outside the
regime); a passage naming several same-type candidates and stating the relation indirectly
("Different sources name Lyon, Paris or Nice as the capital of France.") makes it a weaker one
(inside, when the base knows the fact firmly).

This module holds the relations the designs can write (:data:`RELATIONS`, a table of facts: how to
find the subject in a shipped question, how to state the relation verbatim or through distractors,
and the training question forms, none of them a question form of the shipped sets, so held-out
conflicts differ from training in entity, passage and question), the subject finder
(:func:`subject_of`), nonce subject names (:func:`nonce_names`) and the passage builders
(:func:`verbatim_passage`, :func:`distractor_passage`). The mixture (:mod:`.mixture`) composes them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from cpi.errors import CpiError
from fullscale.conflicts import ConflictItem, find_word_spans

#: Passage designs of the non-context-critical records: ``dataset`` (the shipped item's passage with
#: its counterfactual answer replaced by the true one: the original mixture), ``verbatim`` (a one-line
#: template stating the fact: outside the regime), ``distractors`` (the answer among same-relation
#: candidates, the relation stated indirectly: inside the regime on strongly known facts).
DESIGNS: tuple[str, ...] = ("dataset", "verbatim", "distractors")


@dataclass(frozen=True)
class Relation:
    """How the designs write one relation (a ``category`` of a shipped conflict set).

    ``subject_pattern``: a regex with a group ``s`` that finds the subject in the shipped questions of
    the relation; ``statement``: the verbatim passage (``{s}`` subject, ``{a}`` answer);
    ``indirect``: the distractor passage (``{cands}`` the candidates joined as "A, B or C");
    ``questions``: the training question forms (``{s}``), none of them a shipped question form."""

    dataset: str
    category: str
    subject_pattern: str
    statement: str
    indirect: str
    questions: tuple[str, ...]


#: The relations the designs can write, by category. A table of facts: add a row to add a relation.
RELATIONS: dict[str, Relation] = {r.category: r for r in (
    Relation("CF_World_Facts", "capital", r"capital of (?:the )?(?P<s>.+?)\?$",
             "The capital of {s} is {a}.",
             "Different sources name {cands} as the capital of {s}.",
             ("Name the capital city of {s}.", "Which city is {s}'s capital?")),
    Relation("CF_Bio", "birthplace", r"^Where was (?P<s>.+?) born\?$",
             "{s} was born in {a}.",
             "Different sources give {cands} as the birthplace of {s}.",
             ("Name the birthplace of {s}.", "In which town or city was {s} born?")),
    Relation("CF_Bio", "birth_year", r"^In which year was (?P<s>.+?) born\?$",
             "{s} was born in {a}.",
             "Different sources give {cands} as the year {s} was born.",
             ("Name the year of birth of {s}.", "When was {s} born?")),
    Relation("CF_Bio", "occupation", r"^What was (?P<s>.+?)'s profession\?$",
             "{s} worked as a {a}.",
             "Different sources describe {s} as a {cands}.",
             ("Name the occupation of {s}.", "What did {s} do for a living?")),
    Relation("CF_Bio", "nationality", r"^What nationality was (?P<s>.+?)\?$",
             "{s} was {a}.",
             "Different sources describe {s} as {cands}.",
             ("Name the nationality of {s}.", "Which nationality did {s} have?")),
)}

_SYLLABLES = ("vel", "tor", "ia", "mar", "qu", "en", "dor", "sal", "vi", "ran", "tho", "lu", "mes", "ka", "zo",
              "ber", "nil", "os", "fa", "gre")


def relation_of(category: str, where: str) -> Relation:
    """The :data:`RELATIONS` row of ``category``; :class:`CpiError` naming ``where`` if there is none."""
    if category not in RELATIONS:
        raise CpiError(f"{where}: relation {category!r} has no passage design (known: {', '.join(RELATIONS)})")
    return RELATIONS[category]


def subject_of(item: ConflictItem) -> str:
    """The subject of a shipped question-answer item, found with its relation's ``subject_pattern``.

    Raises :class:`CpiError` naming the item and the field ``question`` when the relation has no row
    in :data:`RELATIONS` or its question does not match."""
    rel = relation_of(item.category, f"item {item.id!r}: field 'category'")
    m = re.search(rel.subject_pattern, item.question.strip())
    if not m or not m.group("s").strip():
        raise CpiError(f"item {item.id!r}: field 'question': cannot locate the subject in {item.question!r}")
    return m.group("s").strip()


def nonce_names(n: int, rng: random.Random, avoid: Sequence[str] = ()) -> list[str]:
    """``n`` distinct made-up proper names (two or three syllables), none equal to a name in ``avoid``
    (case-insensitive) or contained in it as a word, drawn with ``rng``."""
    taken = {a.casefold() for a in avoid}
    text = " ".join(avoid)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        key = name.casefold()
        if len(name) < 5 or key in seen or key in taken or find_word_spans(text, name):
            continue
        seen.add(key)
        out.append(name)
    return out


def join_candidates(cands: Sequence[str]) -> str:
    """``"A"``, ``"A or B"``, ``"A, B or C"``."""
    return cands[0] if len(cands) == 1 else ", ".join(cands[:-1]) + " or " + cands[-1]


def verbatim_passage(rel: Relation, subject: str, answer: str) -> str:
    return rel.statement.format(s=subject, a=answer)


def distractor_passage(rel: Relation, subject: str, candidates: Sequence[str]) -> str:
    return rel.indirect.format(s=subject, cands=join_candidates(candidates))


def answer_pools(items: Sequence[ConflictItem]) -> dict[str, list[str]]:
    """Per category: the distinct parametric answers of ``items`` (case-insensitive), in item order."""
    pools: dict[str, list[str]] = {}
    for it in items:
        pool = pools.setdefault(it.category, [])
        if it.parametric_answer.casefold() not in {a.casefold() for a in pool}:
            pool.append(it.parametric_answer)
    return pools


def other_answers(pool: Sequence[str], exclude: Sequence[str], k: int, rng: random.Random, where: str) -> list[str]:
    """``k`` answers of ``pool`` none of which is (case-insensitively) one of ``exclude``, drawn with ``rng``."""
    own = {a.strip().casefold() for a in exclude}
    others = [a for a in pool if a.strip().casefold() not in own]
    if len(others) < k:
        raise CpiError(f"{where}: {k} other answers of the relation are needed, the facts give {len(others)}")
    return rng.sample(others, k)


def design_record(design: str, rel: Relation, subject: str, answer: str, accepted: Sequence[str],
                  pool: Sequence[str], n_distractors: int, rng: random.Random, where: str) -> dict[str, Any]:
    """The passage, question and (for ``distractors``) the candidates of one designed record.

    ``accepted``: every accepted form of ``answer`` (never drawn as a distractor); ``pool``: the
    relation's answers to draw distractors from. Returns ``{"context", "question", "subject",
    "distractors"}`` (``distractors`` empty for ``verbatim``)."""
    question = rng.choice(rel.questions).format(s=subject)
    if design == "verbatim":
        return {"context": verbatim_passage(rel, subject, answer), "question": question, "subject": subject,
                "distractors": []}
    if design != "distractors":
        raise CpiError(f"{where}: field 'design': {design!r} is not a template design (verbatim, distractors)")
    others = other_answers(pool, accepted, n_distractors, rng, where)
    cands = [answer, *others]
    rng.shuffle(cands)
    return {"context": distractor_passage(rel, subject, cands), "question": question, "subject": subject,
            "distractors": others}


__all__ = ["DESIGNS", "RELATIONS", "Relation", "answer_pools", "design_record", "distractor_passage",
           "join_candidates", "nonce_names", "other_answers", "relation_of", "subject_of", "verbatim_passage"]
