"""The generator of the shipped knowledge-conflict sets, from fact tables kept as data.

The package's authors wrote the fact tables from public, well-known facts (capitals,
birthplaces, famous proverbs...). The tables are CSV files with named columns in
``fullscale/data/sources/`` (one row per fact; list-valued cells such as aliases are joined
with ``|``; an empty cell is "unknown / not used"):

==========================  ===========================================================================
``capitals.csv``            country, capital, capital_aliases, other_cities (counterfactual candidates)
``languages.csv``           country, language, language_aliases, local_languages (never counterfactuals)
``rivers.csv``              city, river, river_aliases
``world_facts.csv``         category, question, answer, answer_aliases, counterfactual,
                            counterfactual_aliases, passage (hand-written; states the counterfactual)
``people.csv``              name, pronoun, birthplace, birth_year, occupation, nationality, award,
                            notable_work
``aliases.csv``             table (``city`` / ``bio``), form, alias: extra accepted surface forms
``pools.csv``               pool, value: counterfactual candidates (rivers, Nobel prizes, ...)
``occupation_domains.csv``  domain, occupation: a counterfactual occupation comes from another domain
``exclusions.csv``          person, attribute, value: counterfactuals never used (partly true)
``quotes.csv``              prefix, last_word, last_word_aliases, forced_ending
``templates.csv``           template, key, text: passages and questions (``{A}`` = the answer)
==========================  ===========================================================================

**The JSONL sets in ``fullscale/data/`` are generated from these tables; do not edit them by
hand.** :func:`build_all` regenerates ``CF_World_Facts.jsonl``, ``CF_Bio.jsonl`` and
``CF_Quotes.jsonl`` deterministically (fixed seed)::

    python -m fullscale.conflict_sources [OUT_DIR]      # default OUT_DIR: fullscale/data

Each counterfactual answer is a real entity of the same type as the true one (another city of
the same country, another river, another nationality...), never the true answer, and every
generated item passes :func:`fullscale.conflicts.validate_items` (the build refuses to write
otherwise). A test checks that the shipped files are byte-identical to the generator's output.
Bump :data:`VERSION` whenever the items change.
"""

from __future__ import annotations

import csv
import random
import sys
from collections import defaultdict, namedtuple
from pathlib import Path
from typing import Any, Sequence

from fullscale.conflicts import (ConflictItem, assemble_item, contains_word, find_word_spans, items_to_jsonl,
                                 validate_items)

VERSION = "1.0"
SEED = 20250101
SOURCES = Path(__file__).resolve().parent / "data" / "sources"


def read_table(name: str, lists: Sequence[str] = (), ints: Sequence[str] = ()) -> list[Any]:
    """Rows of ``SOURCES/<name>.csv`` as named tuples (fields = the CSV header).

    Columns in ``lists`` become tuples (cells split on ``|``), columns in ``ints`` integers; any
    other empty cell becomes ``None``.
    """
    with open(SOURCES / f"{name}.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        row_type = namedtuple(name.title().replace("_", ""), reader.fieldnames)  # type: ignore[misc]
        rows = []
        for raw in reader:
            row = {}
            for key, cell in raw.items():
                if key in lists:
                    row[key] = tuple(cell.split("|")) if cell else ()
                elif not cell:
                    row[key] = None
                else:
                    row[key] = int(cell) if key in ints else cell
            rows.append(row_type(**row))
    return rows


def _grouped(rows: Sequence[Any], key: str, value: str) -> dict[str, tuple[str, ...]]:
    """``{row.key: (row.value, ...)}`` in file order."""
    out: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        out[getattr(r, key)].append(getattr(r, value))
    return {k: tuple(v) for k, v in out.items()}


# ------------------------------------------------------------------ the tables
CAPITALS = read_table("capitals", lists=("capital_aliases", "other_cities"))
LANGUAGES = read_table("languages", lists=("language_aliases", "local_languages"))
RIVERS = read_table("rivers", lists=("river_aliases",))
WORLD_FACTS = read_table("world_facts", lists=("answer_aliases", "counterfactual_aliases"))
PEOPLE = read_table("people", ints=("birth_year",))
QUOTES = read_table("quotes", lists=("last_word_aliases",))
_ALIASES = read_table("aliases")
CITY_ALIASES = _grouped([r for r in _ALIASES if r.table == "city"], "form", "alias")
BIO_ALIASES = _grouped([r for r in _ALIASES if r.table == "bio"], "form", "alias")
POOLS = _grouped(read_table("pools"), "pool", "value")
OCCUPATION_DOMAINS = _grouped(read_table("occupation_domains"), "domain", "occupation")
_EXCLUSIONS = read_table("exclusions")
OCCUPATION_EXCLUDE = _grouped([r for r in _EXCLUSIONS if r.attribute == "occupation"], "person", "value")
NATIONALITY_EXCLUDE = _grouped([r for r in _EXCLUSIONS if r.attribute == "nationality"], "person", "value")
_TEMPLATES = read_table("templates")
TEMPLATES = _grouped(_TEMPLATES, "template", "text")
BIO_QUESTIONS = {r.key: r.text for r in _TEMPLATES if r.template == "bio_question"}


# ------------------------------------------------------------------ generator


def _cap_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _clashes(a: str, b: str) -> bool:
    """Whether two surface forms could be confused: equal, or one a whole word inside the other."""
    return a.casefold() == b.casefold() or contains_word(a, b) or contains_word(b, a)


def _pick(rng: random.Random, pool: Sequence[str], avoid: Sequence[str]) -> str:
    options = [p for p in pool if not any(_clashes(p, a) for a in avoid)]
    if not options:
        raise ValueError(f"no candidate left in pool avoiding {avoid}")
    return rng.choice(options)


def _item(
    dataset: str, idx: int, prefix: str, category: str, context: str, question: str,
    cf: str, cf_alias: Sequence[str], true: str, true_alias: Sequence[str], task: str = "qa",
) -> ConflictItem:
    cf_alias = tuple(a for a in cf_alias if a.casefold() != cf.casefold() and not any(_clashes(a, t) for t in (true, *true_alias)))
    true_alias = tuple(a for a in true_alias if a.casefold() != true.casefold())
    return assemble_item(id=f"{prefix}-{category}-{idx:04d}", dataset=dataset, category=category, context=context,
                         question=question, context_answer=cf, parametric_answer=true, context_aliases=cf_alias,
                         parametric_aliases=true_alias, task=task, version=VERSION)


def build_world_facts(seed: int = SEED) -> list[ConflictItem]:
    """CF_World_Facts: capitals (one item per country), languages, rivers, and hand-written facts."""
    rng = random.Random(seed)
    ds = "CF_World_Facts"
    items: list[ConflictItem] = []
    for i, c in enumerate(CAPITALS):
        cf = _pick(rng, c.other_cities, (c.capital, *c.capital_aliases))
        tmpl = TEMPLATES["capital_context"][i % len(TEMPLATES["capital_context"])]
        context = tmpl.format(A=cf, country=c.country, country_cap=_cap_first(c.country),
                              year=rng.randint(1850, 1990), pop=rng.randint(2, 90))
        context = _cap_first(context)
        question = rng.choice(TEMPLATES["capital_question"]).format(country=c.country)
        items.append(_item(ds, i + 1, "wf", "capital", context, question, cf, CITY_ALIASES.get(cf, ()), c.capital,
                           c.capital_aliases))
    n = 0
    (lang_context,), (lang_question,) = TEMPLATES["language_context"], TEMPLATES["language_question"]
    languages = sorted({row.language for row in LANGUAGES})
    for row in LANGUAGES:
        cf = _pick(rng, languages, (row.language, *row.language_aliases, *row.local_languages, row.country))
        context = _cap_first(lang_context.format(A=cf, country=row.country))
        n += 1
        items.append(_item(ds, n, "wf", "geography", context, lang_question.format(country=row.country), cf, (),
                           row.language, row.language_aliases))
    (river_context,), (river_question,) = TEMPLATES["river_context"], TEMPLATES["river_question"]
    for row in RIVERS:
        cf = _pick(rng, POOLS["river"], (row.river, *row.river_aliases, row.city))
        n += 1
        items.append(_item(ds, n, "wf", "geography", river_context.format(A=cf, city=row.city),
                           river_question.format(city=row.city), cf, (), row.river, row.river_aliases))
    # hand-written facts: geography continues the numbering above, science and history start at 1
    for category in ("geography", "science", "history"):
        n = n if category == "geography" else 0
        for f in (f for f in WORLD_FACTS if f.category == category):
            n += 1
            items.append(_item(ds, n, "wf", category, f.passage, f.question, f.counterfactual,
                               f.counterfactual_aliases, f.answer, f.answer_aliases))
    return items


_PRONOUNS = {"he": ("he", "his", "him"), "she": ("she", "her", "her")}


def _bio_passage(rng: random.Random, name: str, pronoun: str, attrs: dict[str, str | None]) -> str:
    """A template biography; every attribute value appears verbatim wherever the template mentions it."""
    subj, poss, _ = _PRONOUNS[pronoun]
    first: list[str] = []
    place, year = attrs.get("birthplace"), attrs.get("birth_year")
    if place and year:
        first.append(f"{name} was born in {place} in {year}.")
    elif place:
        first.append(f"{name} was born in {place}.")
    elif year:
        first.append(f"{name} was born in {year}.")
    body: list[str] = []
    if attrs.get("nationality"):
        body.append(f"By nationality, {name} was {attrs['nationality']}, and {poss} {attrs['nationality']} background shaped much of {poss} early life.")
    if attrs.get("occupation"):
        occ = attrs["occupation"]
        art = _article(occ)
        body.append(f"{_cap_first(subj)} became famous as {art} {occ}, and colleagues described {poss} approach as {art} {occ} as tireless.")
    if attrs.get("award"):
        body.append(f"{_cap_first(subj)} received the {attrs['award']}, an honour that brought {poss} name to a worldwide audience.")
    if attrs.get("notable_work"):
        body.append(f"{_cap_first(poss)} best-known work is {attrs['notable_work']}, which is still studied and admired today.")
    rng.shuffle(body)
    last: list[str] = []
    if place:
        last.append(f"Later in life, {subj} often returned to {place}, where a small museum now tells {poss} story.")
    elif year:
        last.append(f"Biographers often begin {poss} story with the year {year}.")
    return " ".join(first + body + last)


def build_bio(seed: int = SEED) -> list[ConflictItem]:
    """CF_Bio: one item per (person, known attribute); the substituted value replaces the true one everywhere."""
    rng = random.Random(seed + 1)
    ds = "CF_Bio"
    birthplaces = sorted({p.birthplace for p in PEOPLE if p.birthplace} | set(POOLS["extra_birthplace"]))
    works = sorted({p.notable_work for p in PEOPLE if p.notable_work})
    items: list[ConflictItem] = []
    counters: dict[str, int] = {}
    for p in PEOPLE:
        true_attrs: dict[str, str | None] = {
            "birthplace": p.birthplace,
            "birth_year": str(p.birth_year) if p.birth_year else None,
            "occupation": p.occupation,
            "nationality": p.nationality,
            "award": p.award,
            "notable_work": p.notable_work,
        }
        for attr, true in true_attrs.items():
            if not true:
                continue
            true_alias = BIO_ALIASES.get(true, ())
            avoid = (true, *true_alias, p.name)
            if attr == "birthplace":
                cf = _pick(rng, birthplaces, avoid)
            elif attr == "birth_year":
                cf = str(int(true) + rng.choice([-1, 1]) * rng.randint(3, 15))
            elif attr == "occupation":
                domain = next(d for d, occ in OCCUPATION_DOMAINS.items() if true in occ)
                cf = _pick(
                    rng,
                    [o for o in POOLS["occupation"] if o not in OCCUPATION_DOMAINS[domain]],
                    (*avoid, *OCCUPATION_EXCLUDE.get(p.name, ())),
                )
            elif attr == "nationality":
                cf = _pick(rng, POOLS["nationality"], (*avoid, *NATIONALITY_EXCLUDE.get(p.name, ())))
            elif attr == "award":
                cf = _pick(rng, POOLS["nobel"], avoid)
            else:  # notable_work: another person's best-known work (same type: a titled work)
                cf = _pick(rng, works, avoid)
            cf_alias = BIO_ALIASES.get(cf, ())
            attrs = dict(true_attrs)
            attrs[attr] = cf
            # the other attributes stay true; drop one whose value would mention the true answer
            for k, v in list(attrs.items()):
                if k != attr and v and any(contains_word(v, t) for t in (true, *true_alias)):
                    attrs[k] = None
            context = _bio_passage(rng, p.name, p.pronoun, attrs)
            counters[attr] = counters.get(attr, 0) + 1
            question = BIO_QUESTIONS[attr].format(name=p.name)
            items.append(_item(ds, counters[attr], "bio", attr, context, question, cf, cf_alias, true, true_alias))
    return items


def build_quotes(seed: int = SEED) -> list[ConflictItem]:
    """CF_Quotes: a famous saying whose instruction forces an unusual last word (the Memo Trap task).

    The forced endings are fixed in ``quotes.csv``; ``seed`` is accepted for symmetry and unused.
    """
    ds = "CF_Quotes"
    instructions = TEMPLATES["quote_instruction"]
    items: list[ConflictItem] = []
    for i, q in enumerate(QUOTES):
        for word in (q.last_word, q.forced_ending):
            if contains_word(q.prefix, word):
                raise ValueError(f"quote {q.prefix!r}: the ending {word!r} already occurs in the prefix")
        if any(_clashes(q.forced_ending, t) for t in (q.last_word, *q.last_word_aliases)):
            raise ValueError(f"quote {q.prefix!r}: forced ending {q.forced_ending!r} clashes with the true ending "
                             f"{q.last_word!r}")
        context = instructions[i % len(instructions)].format(A=q.forced_ending)
        items.append(_item(ds, i + 1, "quote", "quote", context, q.prefix, q.forced_ending, (), q.last_word,
                           q.last_word_aliases, task="quote"))
    return items


def substring_problems(item: ConflictItem) -> list[str]:
    """Answers that occur *inside another word* of the context or question (e.g. "Rome" in "Romeo").

    The validator's whole-word rules already make such items valid; the shipped sets are held to
    this stricter standard so that even a naive substring scorer cannot be fooled by them.
    """
    out = []
    for field in ("context", "question"):
        text = getattr(item, field)
        for a in (*item.accepted_context, *item.accepted_parametric):
            raw = text.casefold().count(a.casefold())
            whole = len(find_word_spans(text, a))
            if raw != whole:
                out.append(f"{item.id}: {a!r} occurs inside another word of the {field}")
    return out


def build_all(out_dir: str | Path | None = None, seed: int = SEED) -> dict[str, Path]:
    """Generate the three shipped sets into ``out_dir`` (default ``fullscale/data``); validate before writing."""
    out = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent / "data"
    sets = {
        "CF_World_Facts": build_world_facts(seed),
        "CF_Bio": build_bio(seed),
        "CF_Quotes": build_quotes(seed),
    }
    for name, items in sets.items():
        problems = validate_items(items, name) + [p for it in items for p in substring_problems(it)]
        if problems:
            raise ValueError(f"generated {name} is invalid:\n" + "\n".join(problems[:20]))
    return {name: items_to_jsonl(items, out / f"{name}.jsonl") for name, items in sets.items()}


if __name__ == "__main__":  # pragma: no cover
    for name, path in build_all(sys.argv[1] if len(sys.argv) > 1 else None).items():
        print(f"{name}: {path}")
