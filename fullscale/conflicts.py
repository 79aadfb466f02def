"""Knowledge-conflict sets: one JSONL schema, a loader, a validator and a converter.

A knowledge-conflict item pairs a *context* that asserts a counterfactual
answer with a question whose well-known (parametric) answer differs. A model
that reads the context answers ``context_answer``; a model that falls back on
its memory answers ``parametric_answer``. Measuring which one it gives, per
checkpoint, is how the package tracks context-parametric inversion.

Three sets ship with the package (``fullscale/data/*.jsonl``, built by
:mod:`fullscale.conflict_sources`): ``CF_World_Facts``, ``CF_Bio`` and
``CF_Quotes``. User files in the same schema load through the same path
(:func:`load_conflicts`), and the paper authors' published files convert with
:func:`fullscale.authors.convert_authors` / ``cpi data convert --from authors``.

One JSON object per line; fields (see :class:`ConflictItem`)::

    {"id": "wf-capital-0001", "dataset": "CF_World_Facts", "category": "capital",
     "context": "...", "question": "...", "context_answer": "Lyon",
     "parametric_answer": "Paris", "context_aliases": [], "parametric_aliases": [],
     "context_answer_spans": [[12, 16]], "task": "qa",
     "parametric_in_context": false, "version": "1"}

Answer matching everywhere in this module is *whole-word*, case-insensitive:
a phrase matches only where it is not preceded or followed by a letter, digit
or underscore, so "Rome" does not match inside "Romeo".
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from cpi.errors import CpiError
from cpi.io import jsonl_lines

__all__ = [
    "ConflictItem",
    "SHIPPED_DATASETS",
    "TASKS",
    "shipped_path",
    "load_conflicts",
    "parse_item",
    "validate_file",
    "validate_items",
    "items_to_jsonl",
    "contains_word",
    "find_word_spans",
    "answer_spans",
    "assemble_item",
    "check_file",
    "ON_INVALID",
]

logger = logging.getLogger(__name__)

SHIPPED_DATASETS: tuple[str, ...] = ("CF_World_Facts", "CF_Bio", "CF_Quotes")
TASKS: tuple[str, ...] = ("qa", "quote")
_DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class ConflictItem:
    """One knowledge-conflict item.

    ``context`` is the passage (task ``"qa"``) or the instruction that forces
    an unusual ending (task ``"quote"``); ``question`` is the question or the
    quote prefix to complete. ``context_answer`` is what the context asserts,
    ``parametric_answer`` what the model is expected to know from pretraining;
    the alias tuples hold further accepted surface forms. ``context_answer_spans``
    are optional half-open character spans of the context answer in
    ``context``. ``parametric_in_context`` marks items whose context may
    legitimately mention the parametric answer (otherwise the validator
    rejects such a context, since the item would not be a clean conflict).
    """

    id: str
    dataset: str
    category: str
    context: str
    question: str
    context_answer: str
    parametric_answer: str
    context_aliases: tuple[str, ...] = ()
    parametric_aliases: tuple[str, ...] = ()
    context_answer_spans: tuple[tuple[int, int], ...] = ()
    task: str = "qa"
    parametric_in_context: bool = False
    version: str = "1"

    @property
    def accepted_context(self) -> tuple[str, ...]:
        """All accepted surface forms of the context answer (main form first)."""
        return (self.context_answer, *self.context_aliases)

    @property
    def accepted_parametric(self) -> tuple[str, ...]:
        """All accepted surface forms of the parametric answer (main form first)."""
        return (self.parametric_answer, *self.parametric_aliases)

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready dict written to a JSONL line (tuples become lists)."""
        rec = asdict(self)
        rec["context_aliases"] = list(self.context_aliases)
        rec["parametric_aliases"] = list(self.parametric_aliases)
        rec["context_answer_spans"] = [list(s) for s in self.context_answer_spans]
        return rec


_REQUIRED_STR = ("id", "dataset", "category", "context", "question", "context_answer", "parametric_answer")
_ALL_FIELDS = tuple(f.name for f in fields(ConflictItem))


# ---------------------------------------------------------------- matching


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = phrase.strip().split()
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def find_word_spans(text: str, phrase: str) -> list[tuple[int, int]]:
    """Half-open character spans of whole-word, case-insensitive occurrences of ``phrase``.

    A match may not be preceded or followed by a word character, so "Rome" is
    not found in "Romeo" and "Ur" is not found in "Uruguay". Runs of whitespace
    inside ``phrase`` match any run of whitespace in ``text``.
    """
    if not phrase.strip():
        return []
    return [(m.start(), m.end()) for m in _phrase_pattern(phrase).finditer(text)]


def contains_word(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as a whole word (case-insensitive)."""
    return bool(find_word_spans(text, phrase))


# ---------------------------------------------------------------- parsing


def answer_spans(text: str, answers: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """Every whole-word occurrence of any of ``answers`` in ``text``, as sorted distinct half-open spans.

    >>> answer_spans("Paris, not paris-nord: PARIS.", ["Paris", "PARIS"])
    ((0, 5), (11, 16), (23, 28))
    """
    return tuple(sorted({span for a in answers for span in find_word_spans(text, a)}))


def assemble_item(*, id: str, dataset: str, category: str, context: str, question: str, context_answer: str,
                  parametric_answer: str, context_aliases: Sequence[str] = (), parametric_aliases: Sequence[str] = (),
                  task: str = "qa", version: str = "1") -> ConflictItem:
    """A :class:`ConflictItem` whose derived fields come from its text: ``context_answer_spans`` (every
    whole-word occurrence of an accepted context answer, :func:`answer_spans`) and ``parametric_in_context``
    (an accepted parametric answer occurs in the context as a whole word). Used by every producer of items
    (the shipped sets' generator, authors' files), so the two fields always mean the same."""
    context_aliases, parametric_aliases = tuple(context_aliases), tuple(parametric_aliases)
    return ConflictItem(
        id=id, dataset=dataset, category=category, context=context, question=question,
        context_answer=context_answer, parametric_answer=parametric_answer, context_aliases=context_aliases,
        parametric_aliases=parametric_aliases,
        context_answer_spans=answer_spans(context, (context_answer, *context_aliases)), task=task,
        parametric_in_context=any(contains_word(context, a) for a in (parametric_answer, *parametric_aliases)),
        version=version,
    )


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def parse_item(record: Any) -> ConflictItem:
    """Build a :class:`ConflictItem` from one decoded JSON record.

    Raises ``ValueError`` with a short reason (no file/line: callers add it)
    for a non-object record, unknown fields, missing or empty required fields,
    and fields of the wrong type.
    """
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {_type_name(record)}")
    unknown = sorted(set(record) - set(_ALL_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(_ALL_FIELDS)})")
    for name in _REQUIRED_STR:
        if name not in record:
            raise ValueError(f"missing field '{name}'")
        v = record[name]
        if not isinstance(v, str):
            raise ValueError(f"field '{name}': expected a string, got {_type_name(v)}")
        if not v.strip():
            raise ValueError(f"field '{name}' is empty")
    kw: dict[str, Any] = {n: record[n] for n in _REQUIRED_STR}
    for name in ("context_aliases", "parametric_aliases"):
        v = record.get(name, [])
        if not isinstance(v, list):
            raise ValueError(f"field '{name}': expected a list of strings, got {_type_name(v)}")
        for j, a in enumerate(v):
            if not isinstance(a, str):
                raise ValueError(f"field '{name}'[{j}]: expected a string, got {_type_name(a)}")
            if not a.strip():
                raise ValueError(f"field '{name}'[{j}] is empty")
        kw[name] = tuple(v)
    spans = record.get("context_answer_spans", [])
    if not isinstance(spans, list):
        raise ValueError(f"field 'context_answer_spans': expected a list of [start, end] pairs, got {_type_name(spans)}")
    out_spans = []
    for j, s in enumerate(spans):
        ok = (
            isinstance(s, list)
            and len(s) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in s)
        )
        if not ok:
            raise ValueError(f"field 'context_answer_spans'[{j}]: expected [start, end] integers, got {json.dumps(s)}")
        out_spans.append((s[0], s[1]))
    kw["context_answer_spans"] = tuple(out_spans)
    task = record.get("task", "qa")
    if not isinstance(task, str):
        raise ValueError(f"field 'task': expected a string, got {_type_name(task)}")
    if task not in TASKS:
        raise ValueError(f"field 'task': {task!r} is not one of {', '.join(TASKS)}")
    kw["task"] = task
    pic = record.get("parametric_in_context", False)
    if not isinstance(pic, bool):
        raise ValueError(f"field 'parametric_in_context': expected true/false, got {_type_name(pic)}")
    kw["parametric_in_context"] = pic
    version = record.get("version", "1")
    if not isinstance(version, str):
        raise ValueError(f"field 'version': expected a string, got {_type_name(version)}")
    if not version.strip():
        raise ValueError("field 'version' is empty")
    kw["version"] = version
    return ConflictItem(**kw)


def _read_lines(path: Path) -> list[str]:
    try:
        return jsonl_lines(path.read_text(encoding="utf-8-sig"))  # a leading BOM (Windows editors) is not data
    except FileNotFoundError:
        raise CpiError(f"{path}: no such conflict-set file (shipped sets: {', '.join(SHIPPED_DATASETS)})") from None
    except UnicodeDecodeError as e:
        raise CpiError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise CpiError(f"{path}: cannot read ({e.strerror})") from None


def _parse_lines(path: Path, lines: Sequence[str]) -> tuple[list[tuple[int, ConflictItem]], list[str]]:
    """Parse every non-blank line; return (line number, item) pairs and problems."""
    items: list[tuple[int, ConflictItem]] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})")
            continue
        except RecursionError:
            problems.append(f"{path}:{lineno}: JSON nested too deeply to read")
            continue
        try:
            items.append((lineno, parse_item(rec)))
        except ValueError as e:
            problems.append(f"{path}:{lineno}: {e}")
    return items, problems


# ---------------------------------------------------------------- shipped sets


def shipped_path(name: str) -> Path:
    """Path of a shipped conflict set (``"CF_World_Facts"``, ``"CF_Bio"``, ``"CF_Quotes"``)."""
    if name not in SHIPPED_DATASETS:
        raise CpiError(f"unknown shipped dataset {name!r} (choose from {', '.join(SHIPPED_DATASETS)} or give a JSONL path)")
    return _DATA_DIR / f"{name}.jsonl"


def _resolve(source: str | Path) -> Path:
    if isinstance(source, str) and source in SHIPPED_DATASETS:
        return shipped_path(source)
    return Path(source)


ON_INVALID = ("raise", "skip")


def load_conflicts(source: str | Path, *, strict: bool = False, on_invalid: str = "raise") -> list[ConflictItem]:
    """Load a conflict set: a shipped name or a JSONL path in the same schema.

    Raises :class:`~cpi.errors.CpiError` ``"FILE:LINE: reason"`` for the first
    malformed JSON line, missing/empty field, wrong type, duplicate id, an item
    whose context does not contain its context answer (or an alias) as a whole
    word, or a ``context_answer_spans`` span outside the context or not on an
    accepted answer (and for an empty file). With ``strict=True`` every rule of
    :func:`validate_file` is enforced as well (answer containment, spans).

    ``on_invalid="skip"`` drops each such record instead (a malformed or
    schema-breaking line, a repeated id after its first, an unusable item; with
    ``strict`` every problem) and logs one WARNING with the count and the first
    reason; it never skips silently, and a file with no usable item is still an
    error. The file is read once, so a pipe works.
    """
    if on_invalid not in ON_INVALID:
        raise CpiError(f"on_invalid: {on_invalid!r} is not one of {', '.join(ON_INVALID)}")
    path = _resolve(source)
    parsed, problems = _parse_lines(path, _read_lines(path))
    skip = on_invalid == "skip"
    if problems and not skip:
        raise CpiError(problems[0] + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
    kept: list[tuple[int, ConflictItem]] = []
    seen: dict[str, int] = {}
    for lineno, item in parsed:
        if item.id in seen:
            problems.append(f"{path}:{lineno}: duplicate id {item.id!r} (first on line {seen[item.id]})")
            if not skip:
                raise CpiError(problems[-1])
            continue
        seen[item.id] = lineno
        # every measurement needs the context answer in the context
        bad = [p for p in _item_problems(item) if strict or _UNUSABLE in p or " span [" in p]
        if bad:
            problems.append(f"{path}:{lineno}: {bad[0]}")
            if not skip:
                hint = "" if strict else f" (`cpi data check {path}` lists every problem)"
                raise CpiError(problems[-1] + hint)
            continue
        kept.append((lineno, item))
    if not kept:
        raise CpiError(f"{path}: no items (empty conflict-set file)" if not problems
                       else f"{path}: no usable items ({len(problems)} invalid; first: {problems[0]})")
    if problems:
        logger.warning("%s: skipped %d invalid record(s), kept %d (first: %s)", path, len(problems), len(kept),
                       problems[0])
    return [item for _, item in kept]


def check_file(path: str | Path) -> tuple[list[ConflictItem], list[str]]:
    """Read a conflict-set file once: ``(items, problems)`` where problems are :func:`validate_file`'s.

    For ``cpi data check``: the file is read a single time, so a pipe or ``<(...)`` works.
    """
    path = Path(path)
    try:
        lines = _read_lines(path)
    except CpiError as e:
        return [], [str(e)]
    parsed, problems = _parse_lines(path, lines)
    problems.extend(_semantic_problems(path, parsed))
    if not parsed and not problems:
        problems.append(f"{path}:1: no items (empty conflict-set file)")

    def _lineno(p: str) -> int:
        try:
            return int(p[len(str(path)) + 1 :].split(":", 1)[0])
        except ValueError:
            return 0

    return [item for _, item in parsed], sorted(problems, key=_lineno)


# ---------------------------------------------------------------- validation


_UNUSABLE = "context does not contain the context answer"


def _item_problems(item: ConflictItem) -> list[str]:
    """Content rules for one parsed item (reasons without file:line)."""
    out: list[str] = []
    if not any(contains_word(item.context, a) for a in item.accepted_context):
        out.append(
            f"id {item.id!r}: {_UNUSABLE} {item.context_answer!r}"
            + (f" or an alias {list(item.context_aliases)}" if item.context_aliases else "")
            + " as a whole word"
        )
    if not item.parametric_in_context:
        for a in item.accepted_parametric:
            if contains_word(item.context, a):
                out.append(
                    f"id {item.id!r}: context contains the parametric answer {a!r} as a whole word "
                    "but parametric_in_context is false"
                )
                break
    ctx_lower = {a.strip().casefold() for a in item.accepted_context}
    par_lower = {a.strip().casefold() for a in item.accepted_parametric}
    both = sorted(ctx_lower & par_lower)
    if both:
        out.append(f"id {item.id!r}: {both[0]!r} is accepted both as context and as parametric answer")
    for s, e in item.context_answer_spans:
        if not (0 <= s < e <= len(item.context)):
            out.append(f"id {item.id!r}: span [{s}, {e}] is outside the context (length {len(item.context)})")
            continue
        text = item.context[s:e]
        if " ".join(text.split()).casefold() not in {" ".join(a.split()) for a in ctx_lower}:
            out.append(f"id {item.id!r}: span [{s}, {e}] is {text!r}, not an accepted context answer")
    return out


def _semantic_problems(path: Path | str, parsed: Iterable[tuple[int, ConflictItem]]) -> list[str]:
    problems: list[str] = []
    seen: dict[str, int] = {}
    for lineno, item in parsed:
        if item.id in seen:
            problems.append(f"{path}:{lineno}: duplicate id {item.id!r} (first on line {seen[item.id]})")
        else:
            seen[item.id] = lineno
        problems.extend(f"{path}:{lineno}: {p}" for p in _item_problems(item))
    return problems


def validate_items(items: Sequence[ConflictItem], name: str = "<items>") -> list[str]:
    """Validate in-memory items; problems read ``"NAME:N: reason"`` with N the 1-based position."""
    return _semantic_problems(name, list(enumerate(items, start=1)))


def validate_file(path: str | Path) -> list[str]:
    """Every problem in a conflict-set JSONL file, as ``"FILE:LINE: reason"`` (empty list = valid).

    Rules: each line is a JSON object with the schema's fields and types, no
    empty fields; ids are unique; the context contains the context answer (or
    an alias) as a whole word (case-insensitive); unless
    ``parametric_in_context`` is true, the context contains neither the
    parametric answer nor its aliases as a whole word; no surface form is
    accepted as both answers; every span lies inside the context and its text
    is an accepted context answer. A file with no items is a problem too.
    """
    return check_file(path)[1]


# ---------------------------------------------------------------- writing


def items_to_jsonl(items: Iterable[ConflictItem], path: str | Path) -> Path:
    """Write items as JSONL (one object per line, UTF-8), atomically."""
    from cpi.io import atomic_write_text

    lines = [json.dumps(it.to_record(), ensure_ascii=False) for it in items]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
