"""IFT data loading, validation and response-only label masking."""

from __future__ import annotations

import json

import pytest

from cpi.errors import CpiError
from fullscale.ift_data import (IGNORE_INDEX, format_example, load_ift_data, parse_record, tokenize_examples,
                                write_ift_jsonl)
from tests.fullscale.ft_helpers import alpaca_records, corpus, write_jsonl


@pytest.fixture(scope="module")
def tok():
    from tests.tiny_models import make_tokenizer

    return make_tokenizer("bpe", corpus=corpus(), chat_template=True)


@pytest.fixture(scope="module")
def sp_tok():
    from tests.tiny_models import make_tokenizer

    return make_tokenizer("sp", corpus=corpus())


def _labelled_text(tok, feat):
    ids = [i for i, lab in zip(feat["input_ids"], feat["labels"]) if lab != IGNORE_INDEX]
    assert all(lab == i for i, lab in zip(feat["input_ids"], feat["labels"]) if lab != IGNORE_INDEX)
    return tok.decode(ids)


def test_load_jsonl_and_json_agree(tmp_path):
    recs = alpaca_records(6)
    a = load_ift_data(write_jsonl(tmp_path / "d.jsonl", recs))
    (tmp_path / "d.json").write_text(json.dumps(recs))
    b = load_ift_data(tmp_path / "d.json")
    assert [e.id for e in a] == [str(i) for i in range(1, 7)]
    assert [(x.instruction, x.input, x.output) for x in a] == [(y.instruction, y.input, y.output) for y in b]
    assert a[1].has_context and not a[0].has_context


def test_load_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    recs = alpaca_records(6) + [{"instruction": "x", "input": None, "output": "y"}]
    pd.DataFrame(recs).to_parquet(tmp_path / "d.parquet")
    chat = [{"id": "c1", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    pd.DataFrame(chat).to_parquet(tmp_path / "chat.parquet")
    c = load_ift_data(tmp_path / "d.parquet")
    assert [(x.instruction, x.input, x.output) for x in c] == [
        (r["instruction"], r["input"] or "", r["output"]) for r in recs]
    assert load_ift_data(tmp_path / "chat.parquet")[0].messages == (("user", "a"), ("assistant", "b"))


@pytest.mark.parametrize("field", ["instruction", "output"])
def test_missing_field_names_file_and_record(tmp_path, field):
    recs = alpaca_records(4)
    del recs[2][field]
    path = write_jsonl(tmp_path / "bad.jsonl", recs)
    with pytest.raises(CpiError, match=rf"bad.jsonl:3: missing '{field}'"):
        load_ift_data(path)


def test_bad_records_messages(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
    ])
    with pytest.raises(CpiError, match=r"chat.jsonl:2: missing an 'assistant' message"):
        load_ift_data(path)
    with pytest.raises(CpiError, match=r"x:7: missing 'instruction'/'output' \(Alpaca\) or 'messages'"):
        parse_record("x:7", {"prompt": "a", "completion": "b"})
    with pytest.raises(CpiError, match=r"x:1: messages\[0\] has unknown role 'bot'"):
        parse_record("x:1", {"messages": [{"role": "bot", "content": "a"}]})
    with pytest.raises(CpiError, match=r"x:1: field 'output' must be a string"):
        parse_record("x:1", {"instruction": "a", "output": 3})
    with pytest.raises(CpiError, match="duplicate id"):
        load_ift_data(write_jsonl(tmp_path / "dup.jsonl", [{"id": "a", "instruction": "x", "output": "y"}] * 2))
    with pytest.raises(CpiError, match="not valid JSON"):
        (tmp_path / "broken.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
        load_ift_data(tmp_path / "broken.jsonl")


def test_unknown_template(tok):
    ex = parse_record("x:1", alpaca_records(1)[0])
    with pytest.raises(CpiError, match=r"unknown template 'vicuna' \(known templates: plain, alpaca, chat\)"):
        format_example(ex, tok, "vicuna")


@pytest.mark.parametrize("template", ["alpaca", "plain", "chat"])
def test_labels_cover_exactly_the_response(tok, template):
    ex = parse_record("x:2", alpaca_records(2)[1])
    feat = format_example(ex, tok, template, add_eos=True)
    text = _labelled_text(tok, feat)
    if template == "chat":  # the tiny chat template ends each turn with "\n" (no EOS)
        assert text.strip() == "Rome"
    else:
        assert text == "Rome" + tok.eos_token
    prompt = tok.decode([i for i, lab in zip(feat["input_ids"], feat["labels"]) if lab == IGNORE_INDEX])
    assert "The capital of Italy is Rome." in prompt and "What is the capital of Italy?" in prompt
    full = format_example(ex, tok, template, response_only=False)
    assert sum(lab != IGNORE_INDEX for lab in full["labels"]) > sum(lab != IGNORE_INDEX for lab in feat["labels"])


def test_alpaca_prompt_matches_evaluation_shape(tok):
    from fullscale.prompts import ALPACA_HEADER_INPUT, ALPACA_HEADER_NO_INPUT

    with_ctx = parse_record("x:2", alpaca_records(2)[1])
    no_ctx = parse_record("x:1", alpaca_records(2)[0])
    t1 = tok.decode(format_example(with_ctx, tok, "alpaca")["input_ids"])
    t2 = tok.decode(format_example(no_ctx, tok, "alpaca")["input_ids"])
    assert t1.startswith(ALPACA_HEADER_INPUT) and "### Input:\nThe capital of Italy is Rome.\n\n### Response:\n" in t1
    assert t2.startswith(ALPACA_HEADER_NO_INPUT) and "### Input" not in t2


def test_multiturn_chat_labels_every_assistant_turn(tok):
    ex = parse_record("c:1", {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "capital of France?"}, {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "and Italy?"}, {"role": "assistant", "content": "Rome"}]})
    assert ex.context == "Be brief.\ncapital of France?\nParis"
    assert ex.without_context().messages == (("user", "and Italy?"), ("assistant", "Rome"))
    for template in ("chat", "alpaca", "plain"):
        feat = format_example(ex, tok, template)
        labelled = _labelled_text(tok, feat)
        assert "Paris" in labelled and "Rome" in labelled and "Italy" not in labelled and "brief" not in labelled


def test_sentencepiece_tokenizer_and_truncation(sp_tok):
    ex = parse_record("x:2", alpaca_records(2)[1])
    feat = format_example(ex, sp_tok, "alpaca")
    assert feat["input_ids"][0] == sp_tok.bos_token_id and feat["labels"][0] == IGNORE_INDEX
    assert _labelled_text(sp_tok, feat).replace(" ", "") == "Rome" + sp_tok.eos_token
    # a max_length that cuts the whole response drops the example
    n_prompt = sum(lab == IGNORE_INDEX for lab in feat["labels"])
    feats, dropped = tokenize_examples([ex], sp_tok, "alpaca", max_length=n_prompt - 1)
    assert feats == [] and dropped == [ex.id]


def test_write_roundtrip(tmp_path):
    exs = load_ift_data(write_jsonl(tmp_path / "d.jsonl", alpaca_records(3) + [
        {"id": "chat-1", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]))
    write_ift_jsonl(exs, tmp_path / "out.jsonl")
    again = load_ift_data(tmp_path / "out.jsonl")
    assert [e.id for e in again] == [e.id for e in exs]
    assert again[-1].messages == (("user", "a"), ("assistant", "b"))
