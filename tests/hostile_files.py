"""Hostile and broken input files for the bad-input battery (tests/test_bad_input.py), as data.

Each table maps a kind to ``(file name, bytes, text the one-line error must contain)``. The files
are written once per battery run by :func:`write_all`.
"""

from __future__ import annotations

import json
from pathlib import Path

DEEP = 100_000  # far past the JSON parser's recursion limit (the C parser is fast at any depth)
DEEP_YAML = 700  # past the YAML parser's recursion limit (~550 levels; pure Python: slow when deeper)


def record(**changes) -> dict:
    """A valid conflict-set record (one capital item) with ``changes`` applied."""
    rec = {"id": "b1", "dataset": "CF_Battery", "category": "capital",
           "context": "In this story the capital of France is Lyon.", "question": "What is the capital of France?",
           "context_answer": "Lyon", "parametric_answer": "Paris"}
    rec.update(changes)
    return rec


def _line(rec) -> bytes:
    return (json.dumps(rec) + "\n").encode()


def _deep_field(field: str) -> bytes:
    head = json.dumps(record(**{field: 0}))
    cut = head.index(f'"{field}": 0') + len(f'"{field}": ')
    return (head[:cut] + "[" * DEEP + "]" * DEEP + head[cut + 1:] + "\n").encode()


_GOOD = _line(record())

#: files every JSON/JSONL reader must refuse with a one-line error: kind -> (name, bytes, needle)
COMMON: dict[str, tuple[str, bytes, str]] = {
    "deep-list": ("deep_list.jsonl", b"[" * DEEP + b"]" * DEEP + b"\n", "nested too deeply"),
    "deep-object": ("deep_obj.jsonl", b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"\n", "nested too deeply"),
    "binary": ("binary.jsonl", bytes(range(256)) * 8, ""),
    "latin1": ("latin1.jsonl", _line(record(context="Montréal")).replace("Montr\\u00e9al".encode(), b"Montr\xe9al"),
               ""),
    "truncated-utf8": ("trunc_utf8.jsonl", _GOOD.rstrip(b"\n") + b"\xe2\x82", ""),
    "malformed": ("malformed.jsonl", b'{"id": "b1",\n', ""),
}

#: conflict-set files (JSONL in the package schema) that load_conflicts refuses: kind -> (name, bytes, needle)
CONFLICT_SETS: dict[str, tuple[str, bytes, str]] = {
    **{k: (n, b, nd or {"binary": "not UTF-8", "latin1": "not UTF-8", "truncated-utf8": "not UTF-8",
                         "malformed": "malformed JSON"}[k]) for k, (n, b, nd) in COMMON.items()},
    "deep-in-field": ("deep_field.jsonl", _deep_field("context"), "nested too deeply"),
    "nul-byte": ("nul.jsonl", _GOOD.replace(b"Lyon.", b"Lyon.\x00"), "malformed JSON"),
    "empty": ("empty.jsonl", b"", "no items"),
    "blank-lines": ("blank.jsonl", b"\n  \n\t\n", "no items"),
    "scalar-line": ("scalar.jsonl", b"42\n", "expected a JSON object, got int"),
    "array-line": ("array.jsonl", b"[1, 2]\n", "expected a JSON object, got list"),
    "null-line": ("null.jsonl", b"null\n", "expected a JSON object, got null"),
    "string-line": ("string.jsonl", b'"Lyon"\n', "expected a JSON object, got str"),
    "json-array-of-records": ("records_array.jsonl", (json.dumps([record()]) + "\n").encode(),
                              "expected a JSON object, got list"),
    "missing-context-answer": ("missing.jsonl", _line({k: v for k, v in record().items() if k != "context_answer"}),
                               "missing field 'context_answer'"),
    "context-int": ("ctx_int.jsonl", _line(record(context=5)), "field 'context': expected a string, got int"),
    "question-list": ("q_list.jsonl", _line(record(question=["a"])), "field 'question': expected a string, got list"),
    "answer-null": ("ans_null.jsonl", _line(record(context_answer=None)), "expected a string, got null"),
    "answer-empty": ("ans_empty.jsonl", _line(record(context_answer="")), "field 'context_answer' is empty"),
    "id-blank": ("id_blank.jsonl", _line(record(id="  ")), "field 'id' is empty"),
    "dataset-bool": ("ds_bool.jsonl", _line(record(dataset=True)), "field 'dataset': expected a string, got bool"),
    "aliases-string": ("al_str.jsonl", _line(record(context_aliases="Lyons")), "field 'context_aliases'"),
    "aliases-int": ("al_int.jsonl", _line(record(parametric_aliases=[3])), "field 'parametric_aliases'[0]"),
    "aliases-empty-string": ("al_empty.jsonl", _line(record(context_aliases=[" "])), "field 'context_aliases'[0] is empty"),
    "spans-string": ("sp_str.jsonl", _line(record(context_answer_spans="0-4")), "field 'context_answer_spans'"),
    "spans-short": ("sp_short.jsonl", _line(record(context_answer_spans=[[1]])), "expected [start, end] integers"),
    "spans-bool": ("sp_bool.jsonl", _line(record(context_answer_spans=[[True, 3]])), "expected [start, end] integers"),
    "spans-float": ("sp_float.jsonl", _line(record(context_answer_spans=[[40.0, 44.0]])), "expected [start, end] integers"),
    "span-outside": ("sp_out.jsonl", _line(record(context_answer_spans=[[40, 400]])), "outside the context"),
    "span-negative": ("sp_neg.jsonl", _line(record(context_answer_spans=[[-4, 2]])), "outside the context"),
    "span-not-answer": ("sp_wrong.jsonl", _line(record(context_answer_spans=[[0, 2]])), "not an accepted context answer"),
    "task-unknown": ("task.jsonl", _line(record(task="essay")), "field 'task': 'essay' is not one of"),
    "pic-string": ("pic.jsonl", _line(record(parametric_in_context="yes")), "field 'parametric_in_context'"),
    "version-int": ("version.jsonl", _line(record(version=3)), "field 'version': expected a string, got int"),
    "unknown-field": ("unknown.jsonl", _line(record(answer="Lyon")), "unknown field(s) 'answer'"),
    "duplicate-ids": ("dup.jsonl", _GOOD + _GOOD, "duplicate id 'b1'"),
    "answer-not-in-context": ("no_answer.jsonl", _line(record(context="In this story nothing is said.")),
                              "does not contain the context answer"),
    "answer-inside-word": ("inside.jsonl", _line(record(context="In this story the capital is Lyonnais.")),
                           "does not contain the context answer"),
    "good-then-bad": ("good_bad.jsonl", _GOOD + b"{oops\n", ":2: malformed JSON"),
}

#: the paper authors' layout for `cpi data convert`: kind -> (name, bytes, needle)
AUTHORS: dict[str, tuple[str, bytes, str]] = {
    "deep-list": ("a_deep.json", b"[" * DEEP + b"]" * DEEP, "nested too deeply"),
    "deep-object": ("a_deep_obj.json", b'{"a": ' * DEEP + b"1" + b"}" * DEEP, "nested too deeply"),
    "deep-jsonl-line": ("a_deep.jsonl", b'{"context": "c"}\n{"a": ' + b"[" * DEEP + b"]" * DEEP + b"}\n",
                        "nested too deeply"),
    "latin1": ("a_latin1.json", b'[{"context": "Montr\xe9al"}]', "not UTF-8"),
    "nul-byte": ("a_nul.json", b'[{"context": "x"}]\x00', "binary data"),
    "empty": ("a_empty.json", b"", "no records"),
    "blank": ("a_blank.json", b"\n\n   \n", "no records"),
    "malformed-json": ("a_bad.json", b'[{"context": "c",', "malformed JSON"),
    "malformed-jsonl": ("a_bad.jsonl", b'{"context": "c"}\n{"context": \n', ":2: malformed JSON"),
    "scalar": ("a_scalar.json", b"42", "expected a JSON object, got int"),
    "string": ("a_string.json", b'"text"', "expected a JSON object, got str"),
    "object-without-records": ("a_obj.json", b'{"data": 5}', "record 0: missing field 'context'"),
    "list-of-scalars": ("a_scalars.json", b"[1, 2]", "record 0: expected a JSON object, got int"),
    "jsonl-scalar-line": ("a_scalar.jsonl", b'{"context": "c"}\n7\n', ":2: expected a JSON object, got int"),
    "no-usable-record": ("a_unusable.json", json.dumps([{"context": "c", "question": "q", "answer": "a"}]).encode(),
                         "no record could be converted"),
    "answers-never-in-context": ("a_absent.json", json.dumps(
        [{"context": "Nothing here.", "question": "Capital?", "answer": "Lyon", "memory_answer": "Paris"}]).encode(),
        "does not contain the context answer"),
    "answer-wrong-type": ("a_type.json", json.dumps(
        [{"context": "Lyon.", "question": "Capital?", "answer": 5, "memory_answer": "Paris"}]).encode(),
        "field 'answer': expected a string or a non-empty list"),
    "memo-bad-index": ("a_memo.json", json.dumps(
        [{"prompt": 'Write a quote that ends in the word "x": A', "classes": ["x", "y"], "answer_index": 7}]).encode(),
        "answer_index 0 or 1"),
    # the memo-trap CSV as published (prompt,classes,answer_index): broken in each way a CSV can be
    "memo-csv-missing-column": ("a_memo_cols.csv", b"prompt,classes\r\n\"A\",\"[' x.', ' y.']\"\r\n",
                                "CSV header lacks column(s) answer_index"),
    "memo-csv-header-only": ("a_memo_header.csv", b"prompt,classes,answer_index\r\n", "no records"),
    "memo-csv-classes-not-a-list": ("a_memo_notlist.csv", b'prompt,classes,answer_index\r\n"Write a quote that ends '
                                    b'in the word ""x"": A b","x or y",0\r\n', "not a list literal"),
    "memo-csv-classes-deep": ("a_memo_deep.csv", b'prompt,classes,answer_index\r\n"Write a quote that ends in the '
                              b'word ""x"": A b","' + b"[" * 5000 + b"]" * 5000 + b'",0\r\n', "not a list literal"),
    "memo-csv-classes-huge": ("a_memo_huge.csv", b'prompt,classes,answer_index\r\n"Write a quote that ends in the '
                              b'word ""x"": A b","[\'' + b"x" * 20000 + b'\', \'y\']",0\r\n', "too long"),
    "memo-csv-classes-code": ("a_memo_code.csv", b'prompt,classes,answer_index\r\n"Write a quote that ends in the '
                              b'word ""x"": A b","__import__(\'os\').system(\'true\')",0\r\n', "not a list literal"),
    "memo-csv-index-text": ("a_memo_idx.csv", b'prompt,classes,answer_index\r\n"Write a quote that ends in the '
                            b'word ""x"": A b","[\' x.\', \' y.\']",first\r\n', "answer_index 0 or 1"),
    "memo-csv-short-row": ("a_memo_short.csv", b'prompt,classes,answer_index\r\n"only a prompt"\r\n',
                           "CSV row 2: 1 cells, the header has 3"),
    "memo-csv-no-instruction": ("a_memo_noinstr.csv", b'prompt,classes,answer_index\r\n"Absence makes the heart '
                                b'grow","[\' heavy.\', \' fonder.\']",0\r\n', "no 'word ...:' instruction"),
    "memo-csv-latin1": ("a_memo_latin1.csv", b'prompt,classes,answer_index\r\n"Montr\xe9al","[\'a\', \'b\']",0\r\n',
                        "not UTF-8"),
}

#: IFT data files (`finetune data=`, `score-context --data`, `augment --data`): kind -> (name, bytes, needle)
IFT: dict[str, tuple[str, bytes, str]] = {
    "deep-list": ("i_deep.jsonl", b"[" * DEEP + b"]" * DEEP + b"\n", "nested too deeply"),
    "deep-object": ("i_deep_obj.jsonl", b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"\n", "nested too deeply"),
    "deep-json-array": ("i_deep.json", b"[" * DEEP + b"]" * DEEP, "nested too deeply"),
    "latin1": ("i_latin1.jsonl", b'{"instruction": "Montr\xe9al", "output": "x"}\n', "UTF-8"),
    "empty": ("i_empty.jsonl", b"", "no records"),
    "malformed": ("i_bad.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": \n', "i_bad.jsonl:2"),
}

#: config files (`--config`): kind -> (name, bytes, needle)
CONFIGS: dict[str, tuple[str, bytes, str]] = {
    "deep-yaml": ("c_deep.yaml", b"[" * DEEP_YAML + b"]" * DEEP_YAML, "nested too deeply"),
    "deep-json": ("c_deep.json", b"[" * DEEP + b"]" * DEEP, "nested too deeply"),
    "deep-json-value": ("c_deep_value.json", b'{"seed": ' + b"[" * DEEP + b"]" * DEEP + b"}", "nested too deeply"),
    "binary": ("c_binary.yaml", bytes(range(256)) * 4, "c_binary.yaml"),
    "nul-byte": ("c_nul.yaml", b"seed: 1\n\x00\n", "binary data"),
    "latin1": ("c_latin1.yaml", b"label: Montr\xe9al\n", "not a text config file"),
    "malformed-yaml": ("c_bad.yaml", b"seed: [1, 2\n", "not valid YAML"),
    "malformed-json": ("c_bad.json", b'{"seed": 1,', "not valid JSON"),
    "list-not-mapping": ("c_list.yaml", b"- 1\n- 2\n", "expected a mapping"),
    "scalar-not-mapping": ("c_scalar.json", b"42", "expected a mapping"),
    "unknown-field": ("c_unknown.yaml", b"no_such_field_xyz: 1\n", "no_such_field_xyz"),
}


def write_all(root: Path) -> dict[str, dict[str, Path]]:
    """Write every table's files under ``root``; returns ``{table: {kind: path}}``."""
    out: dict[str, dict[str, Path]] = {}
    for table, files in (("conflicts", CONFLICT_SETS), ("authors", AUTHORS), ("ift", IFT), ("configs", CONFIGS)):
        folder = root / f"hostile_{table}"
        folder.mkdir(parents=True, exist_ok=True)
        out[table] = {}
        for kind, (name, data, _) in files.items():
            (folder / name).write_bytes(data)
            out[table][kind] = folder / name
    return out
