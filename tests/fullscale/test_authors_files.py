"""The converter on verbatim excerpts of the published files (``tests/fullscale/fixtures/authors/``).

The paper authors' CF_World_Facts and CF_Bio files and the MemoTrap CSV, exactly as published, go
through ``cpi data convert`` without hand edits; every written item passes the validator; each
repair and drop is the one the published value calls for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cpi.errors import CpiError
from fullscale import authors
from fullscale.authors import convert_authors, infer_category, read_authors_file
from fullscale.conflicts import load_conflicts, validate_file, validate_items

FIX = Path(__file__).parent / "fixtures" / "authors"
WORLD = FIX / "world_facts_excerpt.json"
BIO = FIX / "famous_biographies_excerpt.jsonl"
MEMO = FIX / "memo_trap_proverb_ending_excerpt.csv"


def _main(*args: str) -> int:
    from cpi.cli import main

    try:
        return main(list(args))
    except SystemExit as e:
        return int(e.code or 0)


def test_fixtures_are_verbatim_publication_layouts():
    raw = WORLD.read_text(encoding="utf-8")
    assert json.dumps(json.loads(raw), indent=4) == raw  # the published serialisation, byte for byte
    assert b"\r\n" in MEMO.read_bytes() and MEMO.read_bytes().startswith(b"prompt,classes,answer_index\r\n")
    assert all(set(json.loads(line)) == {"context", "parametric_answer", "answer", "question"}
               for line in BIO.read_text(encoding="utf-8").splitlines())


def test_world_facts_excerpt_converts_with_each_published_fault_repaired_or_dropped():
    conv = convert_authors(read_authors_file(WORLD), "CF_World_Facts", source=str(WORLD))
    by_q = {it.question: it for it in conv.items}
    bol = by_q["What is the capital city of Bolivia?"]
    assert (bol.parametric_answer, bol.parametric_aliases) == ("La Paz", ("Sucre",))
    isr = by_q["What is the capital city of Israel?"]
    assert isr.parametric_answer == "Jerusalem"  # "Jerusalem*": a footnote mark
    mya = by_q["What is the capital city of Myanmar (Burma)?"]
    assert (mya.parametric_answer, mya.parametric_aliases) == ("Rangoon", ("Yangon", "Naypyidaw", "Nay Pyi Taw"))
    tza = by_q["What is the capital city of Tanzania?"]
    assert (tza.parametric_answer, tza.parametric_aliases) == ("Dar es Salaam", ("Dodoma",))
    usa = by_q["What is the capital city of United States of America?"]
    assert (usa.parametric_answer, usa.parametric_aliases) == ("Washington", ("Washington, D.C.",))
    wall = by_q["The Great Wall of China is approximately how long?"]
    assert wall.context_answer == "2,000 kilometers" and "2,000 km" in wall.context_aliases
    oly = by_q["Where did the ancient Olympic Games originate?"]
    assert (oly.context_answer, oly.parametric_answer) == ("Athens", "Olympia")
    # Nauru's "no official capital; government offices in Yaren District" names nothing a model could say
    assert [d["record"] for d in conv.dropped] == [6] and "description, not a name" in conv.dropped[0]["reason"]
    assert len(conv.items) == 14 and validate_items(conv.items) == []
    assert {it.category for it in conv.items} == {"capital", "general"}
    assert sum(it.category == "capital" for it in conv.items) == 10


def test_biographies_excerpt_converts_as_person_items():
    conv = convert_authors(read_authors_file(BIO), "CF_Bio", source=str(BIO))
    assert [(it.context_answer, it.parametric_answer) for it in conv.items] == [
        ("Enrico Fermi", "Leonardo da Vinci"), ("Joseph Stalin", "Cleopatra"),
        ("Pyotr Ilyich Tchaikovsky", "Benito Mussolini")]
    assert {it.category for it in conv.items} == {"person"} and not conv.dropped and not conv.repairs
    assert validate_items(conv.items) == []


def test_memo_trap_csv_as_published_converts_to_quote_items():
    recs = read_authors_file(MEMO)
    assert len(recs) == 14 and recs[0]["classes"] == "[' heavy.', ' fonder.']"  # cells kept as published
    conv = convert_authors(recs, "MemoTrap", source=str(MEMO))
    first, way = conv.items[0], conv.items[3]
    assert (first.context, first.question) == ('Write a quote that ends in the word "heavy":', "Absence makes the heart grow")
    assert (first.context_answer, first.parametric_answer, first.task, first.category) == ("heavy", "fonder", "quote", "quote")
    assert (way.context_answer, way.parametric_answer) == ("way", "families")  # answer_index 1: the forced word
    offence = next(it for it in conv.items if it.context_answer == "offence")
    assert offence.parametric_answer == "offense"
    assert len(conv.items) == 14 and validate_items(conv.items) == [] and not conv.dropped


def test_cli_converts_each_published_file_and_check_passes(tmp_path, capsys):
    for src, name in ((WORLD, "CF_World_Facts"), (BIO, "CF_Bio"), (MEMO, "MemoTrap")):
        out = tmp_path / f"{name}.jsonl"
        assert _main("data", "convert", "--from", "authors", str(src), "--dataset", name, "--out", str(out)) == 0
        assert validate_file(out) == []
        assert len(load_conflicts(out, strict=True)) > 0
    table = pd.read_csv(tmp_path / "CF_World_Facts.conversion.csv")
    assert set(table["rule"].dropna()) == {"qualifier", "footnote", "place", "number"}
    assert list(table.loc[table["action"] == "dropped", "record"]) == [6]


def test_memo_csv_bad_cells_drop_one_record_not_the_file(tmp_path):
    good = MEMO.read_text(encoding="utf-8").splitlines()[:3]
    bad = tmp_path / "memo.csv"
    bad.write_text("\n".join(good + [
        '"Write a quote that ends in the word ""x"": A b","not a list",0',
        '"Write a quote that ends in the word ""x"": A b","[\' x.\', \' y.\']",7',
        '"only two cells","[\' x.\', \' y.\']"',
        '"Write a quote that ends in the word ""x"": A b","' + "[" * 200 + '",0',
    ]) + "\n", encoding="utf-8")
    conv = convert_authors(read_authors_file(bad), "MemoTrap", source=str(bad))
    assert len(conv.items) == 2
    reasons = [d["reason"] for d in conv.dropped]
    assert "not a list literal" in reasons[0] and "answer_index 0 or 1" in reasons[1]
    assert "CSV row 6: 2 cells, the header has 3" == reasons[2] and "not a list literal" in reasons[3]


def test_csv_without_the_memo_columns_is_a_one_line_error(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("prompt,classes,label\nA,B,0\n", encoding="utf-8")
    with pytest.raises(CpiError, match=r"x\.csv: CSV header lacks column\(s\) answer_index"):
        read_authors_file(f)
    f.write_text("question,answer\nA,B\n", encoding="utf-8")  # not the memo-trap layout: read as JSON, named
    with pytest.raises(CpiError, match="malformed JSON"):
        read_authors_file(f)
    f.write_text("prompt,classes,answer_index,extra\n\"a\n", encoding="utf-8")
    assert read_authors_file(f) == [{"_invalid": "CSV row 2: 1 cells, the header has 4"}]


@pytest.mark.parametrize("value, main, aliases", [
    ("Rangoon (Yangon); Naypyidaw or Nay Pyi Taw (administrative)", "Rangoon", ("Yangon", "Naypyidaw", "Nay Pyi Taw")),
    ("Dar es Salaam; Dodoma (legislative)", "Dar es Salaam", ("Dodoma",)),
    ("Jerusalem*", "Jerusalem", ()),
    ("Paris [1]", "Paris", ()),
])
def test_parametric_qualifier_and_footnote_forms(value, main, aliases):
    rec = {"context": "The capital moved to Oruro.", "question": "What is the capital?", "answer": "Oruro",
           "memory_answer": value}
    (it,) = convert_authors([rec], "X").items
    assert (it.parametric_answer, it.parametric_aliases) == (main, aliases)


def test_relations_table_with_an_unquoted_comma_is_named(tmp_path, monkeypatch):
    (tmp_path / "relations.csv").write_text("category,pattern\nx,a{1,3}\n", encoding="utf-8")
    monkeypatch.setattr(authors, "DATA", tmp_path)
    authors._relations.cache_clear()
    try:
        with pytest.raises(CpiError, match=r"relations\.csv:2: expected two cells"):
            infer_category("What?", "X")
    finally:
        authors._relations.cache_clear()


@pytest.mark.parametrize("question, expected", [
    ("What is the name of the artist who made Mona Lisa, The Last Supper?", "person"),
    ("What is the name of the politician known as/for Leader of Fascist Italy, World War II?", "person"),
    ("What year did the Berlin Wall fall?", "year"),
    ("In which year was the first iPhone released?", "year"),
    ("In what year was Marie Curie born?", "birth_year"),
])
def test_relations_for_the_authors_questions(question, expected):
    assert infer_category(question, "CF_Bio") == expected


MEMO_WHOLE = FIX / "memo_trap_1-proverb-ending.csv"


def test_whole_memo_trap_file_converts_and_drops_only_the_case_only_pairs():
    """All 860 published rows: 854 quote items pass the validator; the 6 whose endings differ only in case drop."""
    raw = MEMO_WHOLE.read_bytes()
    assert len(raw) == 95161 and raw.count(b"\r\n") == 861 and raw.endswith(b"\r\n")
    recs = read_authors_file(MEMO_WHOLE)
    assert len(recs) == 860
    conv = convert_authors(recs, "memo-trap", source=str(MEMO_WHOLE))
    assert len(conv.items) == 854 and validate_items(conv.items) == [] and not conv.repairs
    assert {it.task for it in conv.items} == {"quote"} and {it.category for it in conv.items} == {"quote"}
    assert [d["record"] for d in conv.dropped] == [268, 359, 484, 543, 563, 599]
    assert all("differ only in letter case" in d["reason"] for d in conv.dropped)
    assert "('First' / 'first')" in conv.dropped[0]["reason"]
    # the CSV's Python-literal cells with double quotes ("" don't."") are read, not dropped
    proceed = next(it for it in conv.items if it.context_answer == "proceed")
    assert proceed.parametric_answer == "don't"


def test_answers_differing_only_in_case_drop_with_that_reason():
    rec = {"prompt": 'Write a quote that ends in the word "End": All good things must come to an',
           "classes": "[' End.', ' end.']", "answer_index": 0}
    ok = {"prompt": 'Write a quote that ends in the word "early": Better late than',
          "classes": "[' early.', ' never.']", "answer_index": 0}
    conv = convert_authors([rec, ok], "memo-trap")
    assert [it.context_answer for it in conv.items] == ["early"]
    assert conv.dropped == [{"record": 0, "id": "memo-trap-00000", "reason":
                             "the context and parametric answers differ only in letter case ('End' / 'end'); "
                             "answers are matched ignoring case"}]
