"""Alias tables kept as data, applied to every conflict set when answers are matched.

Three tables in ``fullscale/data/``:

==================  ==========================================================================
``aliases.csv``     kind, form, alias: two names of the same thing, used both ways
                    (exonyms and renamings such as Kyiv / Kiev, Mumbai / Bombay, Czechia /
                    Czech Republic)
``titles.csv``      title: a leading title that may be left out ("Queen Elizabeth II" is also
                    accepted as "Elizabeth II"; only when at least two words remain, so
                    "Queen Victoria" keeps its title)
``units.csv``       short, long: unit spellings that name the same unit ("km" / "kilometers"),
                    used by the converter's number repairs (:mod:`fullscale.authors`)
==================  ==========================================================================

:func:`table_aliases` gives the extra forms of one answer; :func:`accepted_forms` gives an item's
accepted forms per side with where each came from (``answer``, ``item`` alias, ``table``), leaving
out a table form that would also be accepted for the other side. The scorer matches generated text
against these forms, so a set needs no aliases of its own for "Kiev" to count as "Kyiv"; the item
table's ``matched_alias`` column says which alias matched.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

from fullscale.matching import normalize_text

DATA = Path(__file__).resolve().parent / "data"


@functools.lru_cache(maxsize=None)
def _read(name: str) -> tuple[dict[str, str], ...]:
    with open(DATA / name, newline="", encoding="utf-8") as fh:
        return tuple(dict(row) for row in csv.DictReader(fh))


@functools.lru_cache(maxsize=None)
def _equivalents() -> dict[str, tuple[str, ...]]:
    """normalised form -> the other forms of the same name (both directions of every row)."""
    out: dict[str, list[str]] = {}
    for row in _read("aliases.csv"):
        a, b = row["form"].strip(), row["alias"].strip()
        for x, y in ((a, b), (b, a)):
            forms = out.setdefault(normalize_text(x), [])
            if y not in forms:
                forms.append(y)
    return {k: tuple(v) for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def titles() -> tuple[str, ...]:
    """The titles of ``titles.csv``, longest first."""
    return tuple(sorted((r["title"].strip() for r in _read("titles.csv")), key=len, reverse=True))


@functools.lru_cache(maxsize=None)
def units() -> tuple[tuple[str, str], ...]:
    """``(short, long)`` unit spellings of ``units.csv``."""
    return tuple((r["short"].strip(), r["long"].strip()) for r in _read("units.csv"))


def _untitled(form: str) -> str | None:
    for t in titles():
        if form.startswith(t + " "):
            rest = form[len(t) + 1:].strip()
            return rest if len(rest.split()) >= 2 else None
    return None


def table_aliases(form: str) -> tuple[str, ...]:
    """Extra accepted forms of ``form`` from the tables: its equivalents and its title-less form."""
    out = list(_equivalents().get(normalize_text(form), ()))
    bare = _untitled(form.strip())
    if bare and bare not in out:
        out.append(bare)
    return tuple(x for x in out if normalize_text(x) != normalize_text(form))


def _clashes(a: str, b: str) -> bool:
    """Equal after normalisation, or one a run of whole words inside the other."""
    wa, wb = normalize_text(a).split(), normalize_text(b).split()
    if not wa or not wb:
        return False
    short, long_ = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
    return any(long_[i:i + len(short)] == short for i in range(len(long_) - len(short) + 1))


def accepted_forms(item: Any) -> dict[str, dict[str, str]]:
    """``{"context": {form: source}, "parametric": {form: source}}``, main answer first.

    ``source`` is ``"answer"`` (the main form), ``"item"`` (an alias the item carries) or
    ``"table"`` (from the alias tables). A table form is left out when it clashes with any form
    the item itself accepts for the other side (equal, or one inside the other as whole words).
    """
    own = {}
    for side in ("context", "parametric"):
        main = getattr(item, f"{side}_answer")
        forms = {main: "answer"}
        for a in getattr(item, f"{side}_aliases", ()):
            if a and normalize_text(a) not in {normalize_text(f) for f in forms}:
                forms[a] = "item"
        own[side] = forms
    out = {}
    for side, other in (("context", "parametric"), ("parametric", "context")):
        forms = dict(own[side])
        seen = {normalize_text(f) for f in forms}
        for f in list(own[side]):
            for alias in table_aliases(f):
                key = normalize_text(alias)
                if key in seen or any(_clashes(alias, o) for o in own[other]):
                    continue
                seen.add(key)
                forms[alias] = "table"
        out[side] = forms
    return out
