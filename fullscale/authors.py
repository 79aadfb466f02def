"""Converter for the paper authors' published evaluation files (``cpi data convert --from authors``).

:func:`read_authors_file` reads a JSON list, ``{"data": [...]}`` or JSONL; :func:`convert_authors`
turns the records into :class:`~fullscale.conflicts.ConflictItem` s that the package can evaluate.

Real files do not all pass the validator as published, so each record goes through **repairs**
that are applied only when the fix is unambiguous, and the rest is **dropped** with a reason; the
:class:`Conversion` keeps one row per repair and per drop (``cpi data convert`` writes it as a side
table next to the output). The repairs, in order (each named in the side table's ``rule``):

``qualifier``   ``"La Paz (administrative); Sucre (judicial)"`` -> answer ``La Paz``, alias ``Sucre``;
                ``"Gitega (changed from Bujumbura in 2018)"`` -> ``Gitega`` (parentheses are remarks)
``place``       ``"Athens, Greece"`` -> answer ``Athens``, alias ``Athens, Greece`` (one ``", "``)
``number``      ``"2,000 km"`` when the passage says ``"2,000 kilometers"`` (or ``"2000 km"``): the
                passage's form becomes the answer and the given one an alias (unit spellings from
                ``fullscale/data/units.csv``)
``alias``       the passage names the answer by a form of the alias tables (``Kiev`` for ``Kyiv``,
                :mod:`fullscale.aliases`): that form becomes the answer, the given one an alias

A context answer is moved to the form the passage uses (a context-reading model copies it), and
the parametric answer gets the same treatment minus the passage check. A record is dropped when a
needed field is missing or of the wrong type, when no form of the context answer is in the passage
after the repairs, or when a form is accepted for both answers.

Categories: a record's ``category``/``type`` wins, then the ``category`` argument, then the
relation inferred from the question (``fullscale/data/relations.csv``: capital, birthplace,
birth_year, nationality, occupation, award, notable_work, language, river); a dataset whose name
says "capital" (the authors' capitals file) makes every qa item ``capital``; quote items are
``quote``; anything else ``general``.
"""

from __future__ import annotations

import ast
import csv
import functools
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cpi.errors import CpiError
from cpi.io import jsonl_lines, parse_json, read_text_once
from fullscale.aliases import DATA, table_aliases, units
from fullscale.conflicts import ConflictItem, contains_word, find_word_spans, validate_items

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Conversion", "convert_authors", "convert_authors_records", "infer_category", "read_authors_file"]

logger = logging.getLogger(__name__)


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


_MEMO_COLUMNS = ("prompt", "classes", "answer_index")


def _read_memo_csv(text: str, path: Path) -> list[dict[str, Any]] | None:
    """The rows of a memo-trap CSV (header ``prompt,classes,answer_index``, as published), else None.

    Cells stay strings (``classes`` is the published Python-literal string ``"[' heavy.', ' fonder.']"``);
    :func:`_fields` parses them per record, so one bad cell drops one record, not the file.
    """
    first = text.split("\n", 1)[0].strip().lstrip("\ufeff")
    if not first or first[0] in "[{\"" or "," not in first or not first.startswith("prompt"):
        return None  # JSON / JSONL (the memo-trap CSV's header starts with its prompt column)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise CpiError(f"{path}: malformed CSV ({exc})") from None
    header = [h.strip() for h in rows[0]]
    missing = [c for c in _MEMO_COLUMNS if c not in header]
    if missing:
        raise CpiError(f"{path}: CSV header lacks column(s) {', '.join(missing)} (memo-trap layout: "
                       f"{','.join(_MEMO_COLUMNS)})")
    out = []
    for rownum, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            out.append({"_invalid": f"CSV row {rownum}: {len(row)} cells, the header has {len(header)}"})
            continue
        out.append(dict(zip(header, row)))
    return out


def read_authors_file(path: str | Path) -> list[dict[str, Any]]:
    """Read the paper authors' published evaluation file (JSON list, ``{"data": [...]}``, or JSONL),
    or the memo-trap CSV as published (``prompt,classes,answer_index``; CRLF or LF line ends).

    The file is read once (a pipe works); JSONL is split on ``\\n`` only, so a raw U+2028 inside a
    string is legal; too deeply nested JSON is a one-line error.
    """
    path = Path(path)
    text = read_text_once(path, "input")
    memo = _read_memo_csv(text, path)
    if memo is not None:
        return memo
    stripped = text.lstrip()
    whole = stripped.startswith("[")
    if stripped.startswith("{"):  # one JSON object ({"data": [...]}) or JSONL: the parser says which
        try:
            json.loads(text)
            whole = True
        except json.JSONDecodeError as exc:
            whole = exc.msg != "Extra data"
        except RecursionError:
            whole = True
    if whole:
        obj = parse_json(text, str(path))
        if isinstance(obj, dict):
            for key in ("data", "examples", "items"):
                if isinstance(obj.get(key), list):
                    obj = obj[key]
                    break
            else:
                obj = [obj]
        if not isinstance(obj, list):
            raise CpiError(f"{path}: expected a JSON list of records")
        for i, rec in enumerate(obj):
            if not isinstance(rec, dict):
                raise CpiError(f"{path}: record {i}: expected a JSON object, got {_type_name(rec)}")
        return obj
    records = []
    for lineno, line in enumerate(jsonl_lines(text), start=1):
        if not line.strip():
            continue
        rec = parse_json(line, f"{path}:{lineno}", line_known=True)
        if not isinstance(rec, dict):
            raise CpiError(f"{path}:{lineno}: expected a JSON object, got {_type_name(rec)}")
        records.append(rec)
    return records


# ---------------------------------------------------------------- categories


@functools.lru_cache(maxsize=None)
def _relations() -> tuple[tuple[str, re.Pattern[str]], ...]:
    path = DATA / "relations.csv"
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for lineno, r in enumerate(csv.DictReader(fh), start=2):
            if None in r or not r.get("category") or not r.get("pattern"):  # a comma in an unquoted pattern
                raise CpiError(f"{path}:{lineno}: expected two cells (category, pattern); quote a pattern with a comma")
            try:
                out.append((r["category"], re.compile(r["pattern"], re.IGNORECASE)))
            except re.error as exc:
                raise CpiError(f"{path}:{lineno}: pattern is not a regular expression ({exc})") from None
    return tuple(out)


def infer_category(question: str, dataset: str = "", task: str = "qa") -> str:
    """The relation a question asks about (``fullscale/data/relations.csv``), else ``"general"``.

    Quote items are ``"quote"``; a dataset named like the authors' capitals file makes it ``"capital"``.
    """
    if task == "quote":
        return "quote"
    if "capital" in dataset.casefold():
        return "capital"
    for category, pattern in _relations():
        if pattern.search(question):
            return category
    return "general"


# ---------------------------------------------------------------- repairs


def _answers(v: Any, where: str) -> tuple[str, tuple[str, ...]]:
    """Split an authors' answer field (string or list of strings) into (main, aliases)."""
    if isinstance(v, str):
        vals = [v]
    elif isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        vals = list(v)
    else:
        raise ValueError(f"{where}: expected a string or a non-empty list of strings, got {_type_name(v)}")
    vals = [x.strip() for x in vals if x.strip()]
    if not vals:
        raise ValueError(f"{where} is empty")
    main, rest = vals[0], []
    for x in vals[1:]:
        if x.casefold() != main.casefold() and x not in rest:
            rest.append(x)
    return main, tuple(rest)


def _is_name(text: str) -> bool:
    """Starts with a capital or a digit (``"Dar es Salaam"``, ``"Yangon"``; not ``"de facto"``, ``"administrative"``)."""
    text = text.strip()
    return bool(text) and (text[0].isupper() or text[0].isdigit())


def _split_qualified(text: str) -> list[str] | None:
    """``"La Paz (administrative); Sucre (judicial)"`` -> ``["La Paz", "Sucre"]``; None if nothing to split.

    Parts are split on ``;``, `` / `` and a `` or `` between names; a parenthesis is a remark
    (dropped) unless it holds only a name (``"Rangoon (Yangon)"`` -> ``["Rangoon", "Yangon"]``).
    ``[]`` when the text has parts but none is a name (``"no official capital; government offices
    in Yaren District"``): the answer is a description, not a form a model could give.
    """
    if "(" not in text and ";" not in text and " / " not in text:
        return None
    parts: list[str] = []
    for raw in re.split(r"\s*;\s*|\s+/\s+", text):
        inner = [x.strip() for x in re.findall(r"\(([^()]*)\)", raw)]
        head = re.sub(r"\s*\([^()]*\)", "", raw).strip(" .")
        pieces = [x.strip() for x in head.split(" or ")]
        pieces = pieces if len(pieces) > 1 and all(_is_name(x) for x in pieces) else [head]
        parts.extend(pieces + [x for x in inner if _is_name(x)])
    parts = [p for p in dict.fromkeys(parts) if p and "(" not in p and ")" not in p]
    if parts and not any(_is_name(p) for p in parts):
        return []
    parts = [p for p in parts if _is_name(p)]
    return parts if parts and parts != [text] else None


_FOOTNOTE = re.compile(r"\s*(?:[*\u2020\u2021]+|\[\d+\])$")


def _place_head(text: str) -> str | None:
    """``"Athens, Greece"`` -> ``"Athens"`` (exactly one ``", "``, a capitalised tail of at most 3 words)."""
    if text.count(", ") != 1:
        return None
    head, tail = (x.strip() for x in text.split(", "))
    if head and tail[:1].isupper() and len(tail.split()) <= 3 and not any(ch.isdigit() for ch in text):
        return head
    return None


_NUMBER = re.compile(r"^(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?P<sep>\s*)(?P<unit>\S.*)?$")


def _number_variants(text: str) -> list[str]:
    """Other spellings of a number with a unit: thousands separators and unit names (``units.csv``)."""
    m = _NUMBER.match(text.strip())
    if not m:
        return []
    num, unit = m.group("num"), (m.group("unit") or "").strip()
    plain = num.replace(",", "")
    whole, _, frac = plain.partition(".")
    grouped = f"{int(whole):,}" + (f".{frac}" if frac else "")
    nums = list(dict.fromkeys([num, plain, grouped]))
    unit_forms = [unit]
    for short, long_ in units():
        if unit.casefold() == short.casefold():
            unit_forms.append(long_)
        elif unit.casefold() == long_.casefold():
            unit_forms.append(short)
            unit_forms.extend(lg for s, lg in units() if s == short)
    unit_forms = list(dict.fromkeys(unit_forms))
    out = []
    for n in nums:
        for u in unit_forms:
            for form in ((f"{n} {u}", f"{n}{u}") if u else (n,)):
                if form != text and form not in out:
                    out.append(form)
    return out


@dataclass
class _Side:
    main: str
    aliases: list[str]

    @property
    def forms(self) -> list[str]:
        return [self.main, *self.aliases]

    def add(self, *forms: str) -> None:
        for f in forms:
            if f and all(f.casefold() != x.casefold() for x in self.forms):
                self.aliases.append(f)

    def promote(self, form: str) -> None:
        """Make ``form`` the main answer; the old main becomes an alias."""
        old = self.main
        self.main = form
        self.aliases = [a for a in self.aliases if a.casefold() != form.casefold()]
        self.add(old)


@dataclass
class Conversion:
    """The converted items, and one row per repair (``repairs``) and per dropped record (``dropped``)."""

    items: list[ConflictItem]
    repairs: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> "pd.DataFrame":
        """The side table: ``record, id, action (repaired/dropped), rule, side, before, after, reason``."""
        import pandas as pd

        cols = ["record", "id", "action", "rule", "side", "before", "after", "reason"]
        rows = [{"action": "repaired", **r} for r in self.repairs] + [{"action": "dropped", **r} for r in self.dropped]
        return pd.DataFrame(rows, columns=cols).sort_values(["record", "action"], kind="stable").reset_index(drop=True)


def _repair(side: _Side, context: str | None, log: list[tuple[str, str, str]]) -> None:
    """Apply the repairs to one answer side; with ``context`` the main form must end up in it."""
    before = side.main
    bare = _FOOTNOTE.sub("", side.main)
    if bare != side.main and bare:  # "Jerusalem*" -> "Jerusalem" (a footnote mark)
        side.main = bare
        side.aliases = [a for a in side.aliases if a.casefold() != bare.casefold()]
        log.append(("footnote", before, bare))
        before = bare
    split = _split_qualified(side.main)
    if split == []:
        raise ValueError(f"answer {side.main!r} is a description, not a name (no part of it is a name)")
    if split:
        in_ctx = [p for p in split if context is not None and contains_word(context, p)]
        main = in_ctx[0] if in_ctx else split[0]
        side.main = main
        side.aliases = [a for a in side.aliases if a.casefold() != main.casefold()]
        side.add(*(p for p in split if p != main))
        log.append(("qualifier", before, side.main))
    if context is not None and any(contains_word(context, f) for f in side.forms):
        return
    head = _place_head(side.main)
    if head and (context is None or contains_word(context, head)):
        old = side.main
        side.promote(head)
        log.append(("place", old, head))
        return
    if context is None:
        side.add(*_number_variants(side.main))
        return
    for rule, candidates in (("number", _number_variants(side.main)), ("alias", table_aliases(side.main))):
        found = [c for c in candidates if contains_word(context, c)]
        if found:
            old = side.main
            side.promote(found[0])
            side.add(*(c for c in candidates if c != found[0]) if rule == "number" else ())
            log.append((rule, old, found[0]))
            return


_FORCE_RE = re.compile(r"\b(?:ends?|ending)\s+(?:in|with)\s+the\s+word\b", re.IGNORECASE)
_MEMO_RE = re.compile(r"^(?P<instr>.*?\bword\b[^:]*:)\s*(?P<prefix>.+)$", re.DOTALL)


def _strip_punct(s: str) -> str:
    return s.strip().strip(".,;:!?\"'").strip()


def _memo_classes(v: Any) -> Any:
    """A memo-trap ``classes`` value: a list, or the published CSV's Python-literal string of one."""
    if not isinstance(v, str):
        return v
    if len(v) > 10_000:
        raise ValueError(f"memo-trap 'classes' cell too long ({len(v)} characters)")
    try:
        return ast.literal_eval(v.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"memo-trap 'classes' is not a list literal: {v[:60]!r}") from None


def _fields(rec: Mapping[str, Any], quote_set: bool) -> tuple[str, str, str, _Side, _Side]:
    """``(task, context, question, context side, parametric side)`` of one record; ValueError if unusable."""
    if "_invalid" in rec:
        raise ValueError(rec["_invalid"])
    if "prompt" in rec and "classes" in rec and "answer_index" in rec:
        m = _MEMO_RE.match(str(rec["prompt"]).strip())
        if not m:
            raise ValueError("memo-trap prompt has no 'word ...:' instruction to split on")
        classes, idx = _memo_classes(rec["classes"]), rec["answer_index"]
        if isinstance(idx, str) and idx.strip() in ("0", "1"):  # the published CSV's cell
            idx = int(idx)
        if not (isinstance(classes, list) and len(classes) == 2 and isinstance(idx, int) and idx in (0, 1)):
            raise ValueError("memo-trap record needs two 'classes' and answer_index 0 or 1")
        clean = [_strip_punct(str(c)) for c in classes]
        return "quote", m.group("instr").strip(), m.group("prefix").strip(), _Side(clean[idx], []), \
            _Side(clean[1 - idx], [])
    for name in ("context", "answer"):
        if name not in rec:
            raise ValueError(f"missing field '{name}'")
    pkey = "memory_answer" if "memory_answer" in rec else "parametric_answer"
    if pkey not in rec:
        raise ValueError("missing field 'memory_answer' (or 'parametric_answer')")
    for name in ("context", "question"):
        if name in rec and not isinstance(rec[name], str):
            raise ValueError(f"field '{name}': expected a string, got {_type_name(rec[name])}")
    context, question = rec["context"].strip(), str(rec.get("question") or "").strip()
    task = "quote" if quote_set or _FORCE_RE.search(context) else "qa"
    if task == "quote" and not question:  # authors' CF_Quotes layout: the whole prompt sits in `context`
        m = _MEMO_RE.match(context)
        if not m:
            raise ValueError("quote record has no question and its context has no 'word ...:' to split on")
        context, question = m.group("instr").strip(), m.group("prefix").strip()
    elif "question" not in rec:
        raise ValueError("missing field 'question'")
    ctx_main, ctx_alias = _answers(rec["answer"], "field 'answer'")
    par_main, par_alias = _answers(rec[pkey], f"field '{pkey}'")
    if task == "quote":  # "heavy." -> "heavy"
        ctx_main, par_main = _strip_punct(ctx_main), _strip_punct(par_main)
        ctx_alias = tuple(a for a in (_strip_punct(x) for x in ctx_alias) if a)
        par_alias = tuple(a for a in (_strip_punct(x) for x in par_alias) if a)
    return task, context, question, _Side(ctx_main, list(ctx_alias)), _Side(par_main, list(par_alias))


def convert_authors(
    records: Sequence[Mapping[str, Any]],
    dataset: str,
    *,
    category: str | None = None,
    source: str = "<records>",
    version: str = "authors-1",
) -> Conversion:
    """Convert the paper authors' records, repairing what is unambiguous and dropping the rest.

    Field mapping (documented in ``docs/fullscale_datasets.md``): ``context``, ``question``;
    ``answer`` (string, or list: first = main form, rest = aliases) -> the context answer;
    ``memory_answer`` / ``parametric_answer`` -> the parametric answer; ``id`` if present, else
    ``"{dataset}-{index:05d}"``. Memo-trap records (``prompt``, ``classes``, ``answer_index``) and
    records of a quote set ("quote"/"memo" in ``dataset``, or "ends in the word" in the context)
    become task ``"quote"``; a quote prompt without a question is split after the instruction's
    colon, and quote answers lose trailing punctuation. ``parametric_in_context`` is set truthfully
    per item. Repairs, drops and categories: see the module docstring. Raises :class:`CpiError` if
    no record survives (naming the first reason).
    """
    out = Conversion(items=[])
    quote_set = any(k in dataset.casefold() for k in ("quote", "memo"))
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        item_id = str(rec.get("id")) if isinstance(rec, Mapping) and rec.get("id") not in (None, "") \
            else f"{dataset}-{i:05d}"

        def drop(reason: str) -> None:
            out.dropped.append({"record": i, "id": item_id, "reason": reason})

        if not isinstance(rec, Mapping):
            drop(f"expected a JSON object, got {_type_name(rec)}")
            continue
        try:
            task, context, question, ctx, par = _fields(rec, quote_set)
            if not context or not question:
                raise ValueError("empty context or question")
            if not ctx.main or not par.main:
                raise ValueError("empty answer")
        except ValueError as e:
            drop(str(e))
            continue
        if item_id in seen:
            drop(f"duplicate id (first in record {seen[item_id]})")
            continue
        log_c: list[tuple[str, str, str]] = []
        log_p: list[tuple[str, str, str]] = []
        if task == "qa":
            try:
                _repair(ctx, context, log_c)
                _repair(par, None, log_p)
            except ValueError as e:
                drop(str(e))
                continue
        for side, log in (("context", log_c), ("parametric", log_p)):
            out.repairs.extend({"record": i, "id": item_id, "rule": r, "side": side, "before": b, "after": a}
                               for r, b, a in log)
        if ctx.main.casefold() == par.main.casefold():  # MemoTrap: "First" against "first"
            drop(f"the context and parametric answers differ only in letter case ({ctx.main!r} / {par.main!r}); "
                 "answers are matched ignoring case")
            continue
        given = rec.get("category", rec.get("type"))
        cat = str(given) if given not in (None, "") else (category or infer_category(question, dataset, task))
        spans = sorted({s for a in ctx.forms for s in find_word_spans(context, a)})
        item = ConflictItem(
            id=item_id, dataset=dataset, category=cat, context=context, question=question,
            context_answer=ctx.main, parametric_answer=par.main, context_aliases=tuple(ctx.aliases),
            parametric_aliases=tuple(par.aliases), context_answer_spans=tuple(spans), task=task,
            parametric_in_context=any(contains_word(context, a) for a in par.forms), version=version,
        )
        problems = validate_items([item], source)
        if problems:
            drop(problems[0].split(f"id {item_id!r}: ", 1)[-1])
            continue
        seen[item_id] = i
        out.items.append(item)
    if not out.items:
        first = out.dropped[0]["reason"] if out.dropped else "no records"
        raise CpiError(f"{source}: no record could be converted ({len(out.dropped)} dropped; first: record "
                       f"{out.dropped[0]['record'] if out.dropped else 0}: {first})")
    n_pic = sum(it.parametric_in_context for it in out.items)
    if n_pic:
        logger.warning("%s: %d of %d converted items mention the parametric answer in the context", source, n_pic,
                       len(out.items))
    return out


def convert_authors_records(records: Sequence[Mapping[str, Any]], dataset: str, *, category: str | None = None,
                            source: str = "<records>", version: str = "authors-1") -> list[ConflictItem]:
    """The items of :func:`convert_authors` (repairs applied, unusable records dropped)."""
    return convert_authors(records, dataset, category=category, source=source, version=version).items
