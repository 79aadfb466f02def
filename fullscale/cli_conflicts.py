"""``cpi data check`` and ``cpi data convert``: validate and convert knowledge-conflict sets.

- ``cpi data check FILE [FILE ...]`` prints every problem as ``FILE:LINE: reason``
  and exits 2 if any file is invalid; for each valid file it prints one line
  ``OK FILE: N items (dataset ..., categories ...)`` and the command exits 0.
  ``FILE`` may also be a shipped set name (``CF_World_Facts``, ``CF_Bio``, ``CF_Quotes``).
- ``cpi data convert --from authors IN.json[l] --dataset NAME --out OUT.jsonl``
  converts the paper authors' published evaluation file (fields ``context``,
  ``question``, ``answer``, ``memory_answer``/``parametric_answer``; or the
  memo-trap ``prompt``/``classes``/``answer_index`` layout) to this package's
  schema (:mod:`fullscale.authors`): unambiguous faults are repaired, unusable
  records dropped, and one row per repair and per drop is written to
  ``OUT.conversion.csv`` beside the output. Every written item passes the validator.
"""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction", data_sub: "argparse._SubParsersAction") -> None:
    """Add ``check`` and ``convert`` to the ``cpi data`` group (``sub`` is unused here)."""
    check = data_sub.add_parser(
        "check",
        help="validate knowledge-conflict JSONL files (exit 0 valid, 2 invalid)",
        description="Validate knowledge-conflict JSONL files: schema, duplicate ids, empty fields, "
        "context answer present, parametric answer absent (unless parametric_in_context), spans.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="JSONL file(s) or shipped set name(s)")
    check.set_defaults(func=_check)

    conv = data_sub.add_parser(
        "convert",
        help="convert the paper authors' evaluation files to the package's conflict-set schema",
        description="Convert an authors-format JSON/JSONL file (context, question, answer, memory_answer) "
        "to the package's JSONL schema. See docs/fullscale_datasets.md for the field mapping.",
    )
    conv.add_argument("input", metavar="IN", help="input .json (list or {'data': [...]}) or .jsonl file")
    conv.add_argument("--from", dest="source_format", choices=("authors",), default="authors", help="input layout")
    conv.add_argument("--dataset", required=True, help="dataset name written into every item (e.g. CF_World_Facts)")
    conv.add_argument("--category", default=None, help="category for records that carry none")
    conv.add_argument("--version", default="authors-1", help="version string written into every item")
    conv.add_argument("--out", required=True, help="output .jsonl path (written atomically)")
    conv.set_defaults(func=_convert)


def _check(args: argparse.Namespace) -> int:
    from collections import Counter

    from fullscale.conflicts import SHIPPED_DATASETS, check_file, shipped_path

    bad = False
    for f in args.files:
        path = shipped_path(f) if f in SHIPPED_DATASETS else f
        items, problems = check_file(path)  # read once: a pipe or <(...) works
        if problems:
            bad = True
            for p in problems:
                print(p)
            continue
        datasets = ", ".join(sorted({it.dataset for it in items}))
        cats = Counter(it.category for it in items)
        cat_txt = ", ".join(f"{k} {v}" for k, v in sorted(cats.items()))
        print(f"OK {path}: {len(items)} items (dataset {datasets}; {cat_txt})")
    return 2 if bad else 0


def side_table_path(out: "str | Path") -> "Path":
    """Where ``cpi data convert`` writes its repairs-and-drops table: ``OUT`` with ``.conversion.csv``."""
    from pathlib import Path

    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".conversion.csv")


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fullscale.authors import convert_authors, read_authors_file
    from fullscale.conflicts import items_to_jsonl

    from cpi.errors import CpiError
    from cpi.io import atomic_write_table, check_input_file, check_out_file

    if not args.dataset.strip():
        raise CpiError("--dataset: empty name; give the dataset name written into every item (e.g. CF_World_Facts)")
    if args.category is not None and not args.category.strip():
        raise CpiError("--category: empty name")
    if not args.version.strip():
        raise CpiError("--version: empty")
    check_out_file(args.out)
    side = side_table_path(args.out)
    check_out_file(side, what="--out (side table)")
    check_input_file(args.input, "input")
    records = read_authors_file(args.input)
    if not records:
        raise CpiError(f"{args.input}: no records to convert (empty file)")
    conv = convert_authors(records, args.dataset, category=args.category, source=str(args.input),
                           version=args.version)
    atomic_write_table(conv.table(), side)
    out = items_to_jsonl(conv.items, Path(args.out))
    n_pic = sum(it.parametric_in_context for it in conv.items)
    n_rep = len({r["record"] for r in conv.repairs})
    print(f"wrote {len(conv.items)} items to {out} ({n_pic} mention the parametric answer in the context); "
          f"{n_rep} record(s) repaired, {len(conv.dropped)} dropped: reasons in {side}")
    return 0
