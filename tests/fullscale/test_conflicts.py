"""Tests for the knowledge-conflict sets: shipped files, loader, validator, converter, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpi.errors import CpiError
from fullscale import conflict_sources
from fullscale.authors import convert_authors, convert_authors_records, infer_category, read_authors_file
from fullscale.conflicts import (
    SHIPPED_DATASETS,
    ConflictItem,
    contains_word,
    find_word_spans,
    items_to_jsonl,
    load_conflicts,
    shipped_path,
    validate_file,
    validate_items,
)


def _good(**over) -> dict:
    rec = {
        "id": "x-1",
        "dataset": "Mine",
        "category": "capital",
        "context": "The capital of France is Lyon, a city on the Rhone.",
        "question": "What is the capital of France?",
        "context_answer": "Lyon",
        "parametric_answer": "Paris",
    }
    rec.update(over)
    return rec


def _write(path: Path, records) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ shipped sets

MIN_COUNTS = {"CF_World_Facts": 200, "CF_Bio": 200, "CF_Quotes": 100}


@pytest.mark.parametrize("name", SHIPPED_DATASETS)
def test_shipped_file_is_valid_and_large_enough(name):
    assert validate_file(shipped_path(name)) == []
    items = load_conflicts(name, strict=True)
    assert len(items) >= MIN_COUNTS[name]
    assert {it.dataset for it in items} == {name}
    assert len({it.id for it in items}) == len(items)
    assert len({it.version for it in items}) == 1
    for it in items:
        assert not any(it.parametric_answer.casefold() == a.casefold() for a in it.accepted_context)
        assert it.context_answer_spans, it.id
        for s, e in it.context_answer_spans:
            assert it.context[s:e].casefold() in {a.casefold() for a in it.accepted_context}


@pytest.mark.parametrize("name", SHIPPED_DATASETS)
def test_shipped_answers_never_inside_other_words(name):
    """Stricter than the validator: no answer is a substring of a longer word ("Rome" in "Romeo")."""
    problems = [p for it in load_conflicts(name) for p in conflict_sources.substring_problems(it)]
    assert problems == []


def test_substring_check_catches_embedded_answer():
    item = ConflictItem(**_good(context="The capital of Tunisia is Lyon.", parametric_answer="Tunis"))
    assert validate_items([item]) == []  # whole-word rules pass ...
    assert conflict_sources.substring_problems(item) == ["x-1: 'Tunis' occurs inside another word of the context"]


def test_shipped_world_facts_categories_and_positions():
    items = load_conflicts("CF_World_Facts")
    cats = Counter(it.category for it in items)
    assert cats["capital"] >= 100
    assert {"geography", "science", "history"} <= set(cats)
    # answer at varied positions: first span start, relative to the context length, spans the passage
    rel = [it.context_answer_spans[0][0] / len(it.context) for it in items if it.category == "capital"]
    assert min(rel) == 0.0 and max(rel) > 0.8 and any(0.2 < r < 0.6 for r in rel)


def test_shipped_bio_substitution_is_consistent():
    items = load_conflicts("CF_Bio")
    cats = Counter(it.category for it in items)
    assert {"birthplace", "birth_year", "occupation", "nationality", "award"} <= set(cats)
    people = {p.name: p for p in conflict_sources.PEOPLE}
    twice = 0
    for it in items:
        name = next(n for n in people if it.question.find(n) >= 0)
        assert it.context.startswith(name)
        assert not contains_word(it.context, it.parametric_answer)
        if it.category == "birthplace":
            # the birthplace is mentioned twice; both mentions are the substituted one
            assert len(find_word_spans(it.context, it.context_answer)) >= 2
            twice += 1
    assert twice >= 50
    domain = {o: d for d, occ in conflict_sources.OCCUPATION_DOMAINS.items() for o in occ}
    occ_items = [it for it in items if it.category == "occupation"]
    assert occ_items and all(domain[it.context_answer] != domain[it.parametric_answer] for it in occ_items)


def test_shipped_quotes_shape():
    items = load_conflicts("CF_Quotes")
    assert all(it.task == "quote" and it.category == "quote" for it in items)
    by_prefix = {q.prefix: q.last_word for q in conflict_sources.QUOTES}
    assert by_prefix["Absence makes the heart grow"] == "fonder"
    for it in items:
        assert by_prefix[it.question] == it.parametric_answer
        assert f'"{it.context_answer}"' in it.context
        assert not contains_word(it.question, it.context_answer)


def test_generator_is_deterministic(tmp_path):
    paths = conflict_sources.build_all(tmp_path)
    for name, p in paths.items():
        assert p.read_bytes() == shipped_path(name).read_bytes(), f"{name}: shipped file is stale; rebuild it"


# ------------------------------------------------------------------ matching


def test_whole_word_matching():
    assert contains_word("We met in Rome.", "rome")
    assert not contains_word("Romeo and Juliet", "Rome")
    assert not contains_word("Uruguay", "Ur")
    assert contains_word("It was H2O.", "H2O") and not contains_word("H2O2", "H2O")
    assert contains_word("New   York City", "New York City")
    assert find_word_spans("Lyon and lyon", "Lyon") == [(0, 4), (9, 13)]
    assert contains_word("capital: Washington, D.C. today", "Washington, D.C.")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abRome .,-'", max_size=40), st.sampled_from(["Rome", "rome", "a", "Ro me", "b-a"]))
def test_find_word_spans_property(text, phrase):
    """Every match equals the phrase (case-insensitively) and is bounded by non-word characters."""
    spans = find_word_spans(text, phrase)
    for s_, e in spans:
        assert " ".join(text[s_:e].split()).casefold() == " ".join(phrase.split()).casefold()
        assert s_ == 0 or not (text[s_ - 1].isalnum() or text[s_ - 1] == "_")
        assert e == len(text) or not (text[e].isalnum() or text[e] == "_")
    if phrase.casefold() in {w.casefold() for w in text.replace(",", " ").replace(".", " ").replace("'", " ").split()} and "-" not in phrase:
        assert spans


# ------------------------------------------------------------------ validator


def test_validator_accepts_good_file(tmp_path):
    p = _write(tmp_path / "ok.jsonl", [_good(), _good(id="x-2", context_answer_spans=[[25, 29]])])
    assert validate_file(p) == []


@pytest.mark.parametrize(
    "bad, reason",
    [
        (_good(id="x-1"), "duplicate id 'x-1' (first on line 1)"),
        (_good(id="x-3", context="The capital of France is Lyonnais."), "does not contain the context answer 'Lyon'"),
        (_good(id="x-3", context="Lyon replaced Paris as the capital."), "contains the parametric answer 'Paris'"),
        (_good(id="x-3", parametric_aliases=["Lyon"]), "accepted both as context and as parametric answer"),
        (_good(id="x-3", question="  "), "field 'question' is empty"),
        (_good(id="x-3", context_aliases=[""]), "field 'context_aliases'[0] is empty"),
        (_good(id="x-3", context_answer_spans=[[0, 3]]), "span [0, 3] is 'The', not an accepted context answer"),
        (_good(id="x-3", context_answer_spans=[[40, 400]]), "outside the context"),
        (_good(id="x-3", context_answer_spans=[[1]]), "expected [start, end] integers"),
        (_good(id="x-3", task="cloze"), "field 'task': 'cloze' is not one of qa, quote"),
        (_good(id="x-3", parametric_in_context="no"), "field 'parametric_in_context': expected true/false"),
        (_good(id="x-3", context_answer=3), "field 'context_answer': expected a string, got int"),
        (_good(id="x-3", answer="Lyon"), "unknown field(s) 'answer'"),
    ],
)
def test_validator_rejects_with_line_and_reason(tmp_path, bad, reason):
    p = _write(tmp_path / "bad.jsonl", [_good(), "", bad])  # blank line 2: the bad record is on line 3
    problems = validate_file(p)
    assert problems, "bad record accepted"
    assert all(q.startswith(f"{p}:3: ") for q in problems), problems
    assert any(reason in q for q in problems), problems


def test_parametric_in_context_flag_allows_mention(tmp_path):
    rec = _good(context="Lyon replaced Paris as the capital.", parametric_in_context=True)
    assert validate_file(_write(tmp_path / "f.jsonl", [rec])) == []


def test_alias_in_context_satisfies_rule(tmp_path):
    rec = _good(context="Its capital is Lyons.", context_aliases=["Lyons"])
    assert validate_file(_write(tmp_path / "f.jsonl", [rec])) == []
    rec = _good(context="Its capital is Lyon, not Lutetia.", parametric_aliases=["Lutetia"])
    probs = validate_file(_write(tmp_path / "g.jsonl", [rec]))
    assert len(probs) == 1 and "'Lutetia'" in probs[0]


def test_validator_reports_every_problem_sorted(tmp_path):
    p = _write(tmp_path / "bad.jsonl", [_good(), "{oops", _good(id="x-2", context="Paris.")])
    problems = validate_file(p)
    assert [q.split(":")[1] for q in problems] == ["2", "3", "3"]


def test_empty_file_is_a_problem(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n\n")
    assert validate_file(p) == [f"{p}:1: no items (empty conflict-set file)"]
    with pytest.raises(CpiError, match="no items"):
        load_conflicts(p)


def test_validate_items_in_memory():
    item = ConflictItem(**_good())
    assert validate_items([item, dataclasses.replace(item, id="x-2")]) == []
    probs = validate_items([item, item], name="mem")
    assert probs == ["mem:2: duplicate id 'x-1' (first on line 1)"]


# ------------------------------------------------------------------ loader


def test_loader_malformed_json_names_file_and_line(tmp_path):
    p = _write(tmp_path / "m.jsonl", [_good(), _good(id="x-2"), '{"id": "x-3", "dataset": '])
    with pytest.raises(CpiError, match=rf"^{p}:3: malformed JSON"):
        load_conflicts(p)


def test_loader_missing_field_names_file_and_line(tmp_path):
    rec = _good(id="x-2")
    del rec["parametric_answer"]
    p = _write(tmp_path / "m.jsonl", [_good(), rec])
    with pytest.raises(CpiError, match=rf"^{p}:2: missing field 'parametric_answer'"):
        load_conflicts(p)


def test_loader_non_object_and_duplicate(tmp_path):
    p = _write(tmp_path / "a.jsonl", ["[1, 2]"])
    with pytest.raises(CpiError, match=rf"^{p}:1: expected a JSON object, got list"):
        load_conflicts(p)
    p = _write(tmp_path / "b.jsonl", [_good(), _good()])
    with pytest.raises(CpiError, match=rf"^{p}:2: duplicate id"):
        load_conflicts(p)


def test_loader_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(CpiError, match="no such conflict-set file"):
        load_conflicts(tmp_path / "nope.jsonl")
    with pytest.raises(CpiError, match="unknown shipped dataset"):
        shipped_path("CF_Nope")


def test_loader_strict_enforces_content_rules(tmp_path):
    p = _write(tmp_path / "s.jsonl", [_good(context="Paris and Lyon.")])
    assert load_conflicts(p)[0].context == "Paris and Lyon."  # structural load passes
    with pytest.raises(CpiError, match=rf"^{p}:1: .*parametric answer 'Paris'"):
        load_conflicts(p, strict=True)


def test_user_file_round_trips_through_same_path(tmp_path):
    items = load_conflicts("CF_Bio")[:5]
    mine = [dataclasses.replace(it, dataset="MyBio", id=f"my-{i}") for i, it in enumerate(items)]
    p = items_to_jsonl(mine, tmp_path / "sub" / "mine.jsonl")
    assert validate_file(p) == []
    again = load_conflicts(str(p))
    assert again == mine
    assert isinstance(again[0].context_aliases, tuple) and isinstance(again[0].context_answer_spans, tuple)
    assert again[0].accepted_context[0] == again[0].context_answer


def test_optional_fields_default(tmp_path):
    it = load_conflicts(_write(tmp_path / "d.jsonl", [_good()]))[0]
    assert (it.task, it.parametric_in_context, it.version, it.context_aliases) == ("qa", False, "1", ())
    assert it.accepted_parametric == ("Paris",)


# ------------------------------------------------------------------ converter

AUTHORS = [
    {
        "context": "In a surprising turn of events, Lyon was declared the capital of France in 1990.",
        "question": "What is the capital of France?",
        "answer": "Lyon",
        "memory_answer": "Paris",
    },
    {
        "context": "Albert Einstein was born in Munich, a city in Bavaria.",
        "question": "Where was Albert Einstein born?",
        "answer": ["Munich", "München"],
        "parametric_answer": ["Ulm"],
        "category": "birthplace",
    },
    {
        "context": "Paris lost its status; Lyon is the new capital.",
        "question": "What is the capital of France?",
        "answer": "Lyon",
        "memory_answer": "Paris",
    },
    {
        "context": 'Write a quote that ends in the word "heavy": Absence makes the heart grow',
        "question": "",
        "answer": "heavy.",
        "memory_answer": "fonder.",
    },
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_converter_round_trip(tmp_path, suffix):
    src = tmp_path / f"authors{suffix}"
    if suffix == ".json":
        src.write_text(json.dumps({"data": AUTHORS}))
    else:
        _write(src, AUTHORS)
    items = convert_authors_records(read_authors_file(src), "CF_World_Facts", source=str(src))
    assert [it.id for it in items] == [f"CF_World_Facts-{i:05d}" for i in range(4)]
    a, b, c, q = items
    assert (a.context_answer, a.parametric_answer, a.task, a.category) == ("Lyon", "Paris", "qa", "capital")
    assert a.context[slice(*a.context_answer_spans[0])] == "Lyon" and not a.parametric_in_context
    assert (b.context_answer, b.context_aliases, b.parametric_answer, b.category) == ("Munich", ("München",), "Ulm", "birthplace")
    assert c.parametric_in_context  # truthfully flagged: the context names Paris
    assert q.task == "quote" and q.context == 'Write a quote that ends in the word "heavy":'
    assert (q.question, q.context_answer, q.parametric_answer) == ("Absence makes the heart grow", "heavy", "fonder")
    out = items_to_jsonl(items, tmp_path / "out.jsonl")
    assert validate_file(out) == []
    assert load_conflicts(out) == items


def test_converter_memo_trap_layout():
    recs = [{"prompt": 'Write a quote that ends in the word "early": Better late than', "classes": [" early.", " never."], "answer_index": 0}]
    (it,) = convert_authors_records(recs, "MemoTrap")
    assert (it.task, it.context_answer, it.parametric_answer, it.question) == ("quote", "early", "never", "Better late than")
    assert validate_items([it]) == []


def test_converter_drops_records_with_a_reason(tmp_path):
    conv = convert_authors([AUTHORS[0], {"context": "c", "question": "q", "answer": "a"}], "X", source="src")
    assert len(conv.items) == 1
    assert conv.dropped == [{"record": 1, "id": "X-00001", "reason": "missing field 'memory_answer' (or 'parametric_answer')"}]
    with pytest.raises(CpiError, match=r"src: no record could be converted \(1 dropped; first: record 0: missing field"):
        convert_authors([{"context": "c", "question": "q", "answer": "a"}], "X", source="src")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(AUTHORS[0]) + "\n{broken\n")
    with pytest.raises(CpiError, match=rf"^{bad}:2: malformed JSON"):
        read_authors_file(bad)


def _rec(context, answer, memory, question="What is the capital of Bolivia?", **kw):
    return {"context": context, "question": question, "answer": answer, "memory_answer": memory, **kw}


def test_repair_qualifier_answer_becomes_answer_plus_aliases():
    conv = convert_authors([
        _rec("In 2029 the capital moved to Cochabamba.", "Cochabamba", "La Paz (administrative); Sucre (judicial)"),
        _rec("Bolivia now governs from La Paz (administrative seat).", "La Paz (administrative); Sucre (judicial)",
             "Cochabamba"),
        _rec("Burundi moved its capital to Ngozi.", "Ngozi", "Gitega (changed from Bujumbura in December 2018)",
             question="What is the capital city of Burundi?"),
    ], "CF_World_Facts")
    a, b, c = conv.items
    assert (a.parametric_answer, a.parametric_aliases) == ("La Paz", ("Sucre",))
    assert (b.context_answer, b.context_aliases) == ("La Paz", ("Sucre",))
    assert (c.parametric_answer, c.parametric_aliases) == ("Gitega", ())
    assert {r["rule"] for r in conv.repairs} == {"qualifier"} and not conv.dropped


def test_repair_place_number_and_alias_forms():
    conv = convert_authors([
        _rec("The summit was held in Athens this year.", "Athens, Greece", "Paris, France",
             question="Where was the summit held?"),
        _rec("The wall is now 2,000 kilometers long.", "2,000 km", "21,196 km", question="How long is the wall?"),
        _rec("The wall is now 2000 km long.", "2,000 km", "21,196 km", question="How long is the wall?", id="w2"),
        _rec("The capital was moved to Kiev in 2029.", "Kyiv", "Lviv", question="What is the capital of Ukraine?"),
    ], "CF_World_Facts")
    place, num, num2, alias = conv.items
    assert (place.context_answer, place.context_aliases) == ("Athens", ("Athens, Greece",))
    assert (place.parametric_answer, place.parametric_aliases) == ("Paris", ("Paris, France",))
    assert num.context_answer == "2,000 kilometers" and "2,000 km" in num.context_aliases
    assert "21,196 kilometers" in num.parametric_aliases
    assert num2.context_answer == "2000 km"
    assert (alias.context_answer, alias.context_aliases) == ("Kiev", ("Kyiv",))
    assert [r["rule"] for r in conv.repairs if r["side"] == "context"] == ["place", "number", "number", "alias"]
    assert validate_items(conv.items) == []


def test_unrepairable_records_are_dropped_not_written(tmp_path, capsys):
    recs = [_rec("The capital moved to Oruro.", "Oruro", "Sucre"),
            _rec("The capital moved somewhere else entirely.", "Potosí", "Sucre"),
            _rec("Lyon and Paris.", "Lyon", "lyon", question="Capital of France?"),
            _rec("Lyon and Paris.", ["Lyon", "Paris"], "Paris", question="Capital of France?")]
    src = _write(tmp_path / "a.jsonl", recs)
    out = tmp_path / "conv.jsonl"
    assert _main("data", "convert", str(src), "--dataset", "CF_World_Facts", "--out", str(out)) == 0
    assert "wrote 1 items" in capsys.readouterr().out
    side = tmp_path / "conv.conversion.csv"
    import pandas as pd

    table = pd.read_csv(side)
    assert list(table["action"]) == ["dropped"] * 3 and list(table["record"]) == [1, 2, 3]
    assert "does not contain the context answer" in table["reason"][0]
    assert "differ only in letter case ('Lyon' / 'lyon')" in table["reason"][1]
    assert "'paris' is accepted both" in table["reason"][2]
    assert validate_file(out) == [] and len(load_conflicts(out)) == 1


@pytest.mark.parametrize("question, dataset, expected", [
    ("What is the capital city of Chad?", "CF_World_Facts", "capital"),
    ("Where was Marie Curie born?", "CF_Bio", "birthplace"),
    ("In what year was Marie Curie born?", "CF_Bio", "birth_year"),
    ("What is the nationality of Marie Curie?", "CF_Bio", "nationality"),
    ("What was the occupation of Marie Curie?", "CF_Bio", "occupation"),
    ("Which award did Marie Curie receive?", "CF_Bio", "award"),
    ("What is the best-known work of Tolstoy?", "CF_Bio", "notable_work"),
    ("Who discovered penicillin?", "CF_World_Facts", "general"),
    ("Which city is it?", "CF_Capitals", "capital"),
])
def test_infer_category(question, dataset, expected):
    assert infer_category(question, dataset) == expected


def test_record_category_and_user_category_win_over_inference():
    r = _rec("The capital moved to Oruro.", "Oruro", "Sucre")
    assert convert_authors([{**r, "type": "geo"}], "X").items[0].category == "geo"
    assert convert_authors([r], "X", category="mine").items[0].category == "mine"
    assert convert_authors([r], "X").items[0].category == "capital"


def test_load_on_invalid_skip_warns_and_counts(tmp_path, caplog):
    path = _write(tmp_path / "mixed.jsonl", [_good(id="a"), _good(id="b", context="Nothing here."), _good(id="a")])
    with pytest.raises(CpiError, match="does not contain the context answer"):
        load_conflicts(path)
    with caplog.at_level("WARNING"):
        items = load_conflicts(path, on_invalid="skip")
    assert [it.id for it in items] == ["a"]
    assert "skipped 2 invalid record(s), kept 1" in caplog.text
    with pytest.raises(CpiError, match="no usable items"):
        load_conflicts(_write(tmp_path / "none.jsonl", [_good(context="Nothing.")]), on_invalid="skip")
    with pytest.raises(CpiError, match="on_invalid"):
        load_conflicts(path, on_invalid="ignore")


def test_raw_u2028_inside_a_string_is_legal_jsonl(tmp_path):
    rec = _good(context="The capital of France is Lyon,\u2028a city on the Rhone.")
    path = tmp_path / "u2028.jsonl"
    path.write_text(json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")
    assert validate_file(path) == []
    assert load_conflicts(path)[0].context == rec["context"]
    authors = tmp_path / "a.jsonl"
    authors.write_text(json.dumps(AUTHORS[0] | {"context": AUTHORS[0]["context"] + "\u2028"}, ensure_ascii=False) + "\n")
    assert len(read_authors_file(authors)) == 1


def test_deep_nesting_is_a_one_line_error(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100000 + "]" * 100000 + "\n")
    assert "nested too deeply" in validate_file(deep)[0]
    with pytest.raises(CpiError, match="nested too deeply"):
        load_conflicts(deep)
    with pytest.raises(CpiError, match="nested too deeply"):
        read_authors_file(deep)


def test_check_and_convert_read_a_pipe(tmp_path):
    good = _write(tmp_path / "good.jsonl", [_good()])
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m cpi.cli data check <(cat {good})"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and ": 1 items" in r.stdout, r.stdout + r.stderr
    src = _write(tmp_path / "authors.jsonl", AUTHORS[:2])
    out = tmp_path / "piped.jsonl"
    r = subprocess.run(["bash", "-c", f"cat {src} | {sys.executable} -m cpi.cli data convert /dev/stdin --dataset M "
                        f"--out {out}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "wrote 2 items" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------ CLI


def _cpi(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cpi.cli", *args], capture_output=True, text=True, timeout=120)


def _main(*args: str) -> int:
    from cpi.cli import main

    try:
        return main(list(args))
    except SystemExit as e:  # argparse / error paths
        return int(e.code or 0)


def test_cli_check_exit_codes(tmp_path, capsys):
    good = _write(tmp_path / "good.jsonl", [_good()])
    bad = _write(tmp_path / "bad.jsonl", [_good(), _good()])
    assert _main("data", "check", str(good), "CF_Quotes") == 0
    out = capsys.readouterr().out
    assert f"OK {good}: 1 items" in out and "CF_Quotes.jsonl: " in out
    assert _main("data", "check", str(good), str(bad)) == 2
    out = capsys.readouterr().out
    assert f"{bad}:2: duplicate id 'x-1'" in out and f"OK {good}" in out


def test_cli_convert(tmp_path, capsys):
    src = _write(tmp_path / "authors.jsonl", AUTHORS[:2])
    out = tmp_path / "conv.jsonl"
    assert _main("data", "convert", "--from", "authors", str(src), "--dataset", "Mine", "--out", str(out)) == 0
    assert "wrote 2 items" in capsys.readouterr().out
    assert [it.dataset for it in load_conflicts(out)] == ["Mine", "Mine"]
    assert _main("data", "check", str(out)) == 0


def test_cli_subprocess_error_exit_code(tmp_path):
    """The installed entry point: a missing input gives `cpi: error:` and exit code 2."""
    r = _cpi("data", "convert", str(tmp_path / "missing.json"), "--dataset", "X", "--out", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2, r.stderr
    assert "cpi: error:" in r.stderr and "missing.json" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_byte_order_mark_and_crlf_are_not_data(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(_good()) + "\r\n").encode() + (json.dumps(_good(id="x-2")) + "\r\n").encode())
    assert validate_file(path) == [] and [it.id for it in load_conflicts(path)] == ["x-1", "x-2"]
    authors = tmp_path / "a.json"
    authors.write_bytes(b"\xef\xbb\xbf" + json.dumps(AUTHORS[:1]).encode())
    assert len(read_authors_file(authors)) == 1


def test_authors_style_file_converts_and_evaluates_end_to_end(tmp_path, capsys):
    """The faults of the published files (qualifiers, number formats, "City, Country", exonyms, an unusable record)
    convert without hand edits, and `cpi evaluate` runs on the result with per-category summaries."""
    import pandas as pd

    from tests.fullscale.ft_helpers import corpus
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    recs = [
        _rec("In 2029 Bolivia moved its capital to Cochabamba.", "Cochabamba", "La Paz (administrative); Sucre (judicial)"),
        _rec("The summit moved to Athens this year.", "Athens, Greece", "Paris, France", question="Where is the summit held?"),
        _rec("The wall is now 2,000 kilometers long.", "2,000 km", "21,196 km", question="How long is the wall?"),
        _rec("Ukraine moved its capital to Kiev in 2029.", "Kyiv", "Lviv", question="What is the capital of Ukraine?"),
        _rec("Marie Curie was born in Vienna in 1867.", "Vienna", "Warsaw", question="Where was Marie Curie born?"),
        _rec("This passage names no answer.", "Oruro", "Sucre"),
    ]
    src = tmp_path / "world_facts.json"
    src.write_text(json.dumps(recs))
    out = tmp_path / "wf.jsonl"
    assert _main("data", "convert", "--from", "authors", str(src), "--dataset", "CF_World_Facts", "--out", str(out)) == 0
    assert "wrote 5 items" in capsys.readouterr().out
    assert _main("data", "check", str(out)) == 0
    side = pd.read_csv(tmp_path / "wf.conversion.csv")
    assert sorted(side.loc[side.action == "repaired", "rule"]) == ["alias", "number", "place", "place", "qualifier"]
    assert list(side.loc[side.action == "dropped", "record"]) == [5]
    tok = make_tokenizer("bpe", corpus=corpus() + [r["context"] for r in recs])
    ckpt = make_tiny_checkpoint(tmp_path / "run" / "checkpoint-1", "llama", tokenizer=tok)
    ev = tmp_path / "ev"
    assert _main("evaluate", "--checkpoints", str(ckpt), "--datasets", str(out), "--out", str(ev), "--modes",
                 "generate,logprob", "--n-boot", "10", "--no-plot", "--max-new-tokens", "4") == 0
    summary = pd.read_csv(ev / "summary.csv")
    assert set(summary["category"]) == {"capital", "general", "birthplace", "ALL"}
    items = pd.read_csv(ev / "items.csv")
    assert {"matched_alias", "margin_first_token", "decided_by_length", "outcome_contains"} <= set(items.columns)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from tests import hostile_files

    return hostile_files.write_all(tmp_path_factory.mktemp("hostile"))["conflicts"]


def _check_kinds():
    from tests import hostile_files

    return sorted(hostile_files.CONFLICT_SETS)


@pytest.mark.parametrize("kind", _check_kinds())
def test_data_check_lists_each_hostile_file_kind(kind, hostile, capsys):
    """`cpi data check` on every hostile conflict-set kind: exit 2, each problem one `FILE...: reason` line."""
    from tests import hostile_files

    path = hostile[kind]
    before = path.read_bytes()
    assert _main("data", "check", str(path)) == 2
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines and all(line.startswith(str(path)) for line in lines), captured.out
    assert "Traceback" not in captured.out + captured.err
    needle = hostile_files.CONFLICT_SETS[kind][2]
    assert any(needle in line for line in lines), (needle, lines)
    assert path.read_bytes() == before
