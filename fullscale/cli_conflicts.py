"""``cpi data check`` and ``cpi data convert``: validate and convert knowledge-conflict sets.

- ``cpi data check FILE [FILE ...]`` prints every problem as ``FILE:LINE: reason``
  and exits 2 if any file is invalid; for each valid file it prints one line
  ``OK FILE: N items (dataset ..., categories ...)`` and the command exits 0.
  ``FILE`` may also be a shipped set name (``CF_World_Facts``, ``CF_Bio``, ``CF_Quotes``).
- ``cpi data convert --from authors IN.json[l] --dataset NAME --out OUT.jsonl``
  converts the paper authors' published evaluation file (fields ``context``,
  ``question``, ``answer``, ``memory_answer``/``parametric_answer``; or the
  memo-trap ``prompt``/``classes``/``answer_index`` layout) to this package's
  schema, then reports how many converted items the validator would reject.
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

    from fullscale.conflicts import SHIPPED_DATASETS, load_conflicts, shipped_path, validate_file

    bad = False
    for f in args.files:
        path = shipped_path(f) if f in SHIPPED_DATASETS else f
        problems = validate_file(path)
        if problems:
            bad = True
            for p in problems:
                print(p)
            continue
        items = load_conflicts(path)
        datasets = ", ".join(sorted({it.dataset for it in items}))
        cats = Counter(it.category for it in items)
        cat_txt = ", ".join(f"{k} {v}" for k, v in sorted(cats.items()))
        print(f"OK {path}: {len(items)} items (dataset {datasets}; {cat_txt})")
    return 2 if bad else 0


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fullscale.conflicts import convert_authors_records, items_to_jsonl, read_authors_file, validate_file

    from cpi.errors import CpiError
    from cpi.io import check_input_file, check_out_file

    if not args.dataset.strip():
        raise CpiError("--dataset: empty name; give the dataset name written into every item (e.g. CF_World_Facts)")
    if args.category is not None and not args.category.strip():
        raise CpiError("--category: empty name")
    if not args.version.strip():
        raise CpiError("--version: empty")
    check_out_file(args.out)
    check_input_file(args.input, "input")
    records = read_authors_file(args.input)
    if not records:
        raise CpiError(f"{args.input}: no records to convert (empty file)")
    items = convert_authors_records(
        records, args.dataset, category=args.category, source=str(args.input), version=args.version
    )
    out = items_to_jsonl(items, Path(args.out))
    problems = validate_file(out)
    n_pic = sum(it.parametric_in_context for it in items)
    print(f"wrote {len(items)} items to {out} ({n_pic} mention the parametric answer in the context)")
    if problems:
        print(f"warning: {len(problems)} problem(s) in the converted file; run `cpi data check {out}` to list them")
    return 0
