"""Prompt templates and token spans (fullscale.prompts)."""

from __future__ import annotations

import pytest

from cpi.errors import CpiError
from fullscale.prompts import TEMPLATES, format_prompt, format_prompts, model_max_length
from tests.fullscale.evalkit import item, quote_item, sample_items
from tests.tiny_models import make_tokenizer


@pytest.fixture(scope="module", params=["bpe", "sp"])
def tok(request):
    return make_tokenizer(request.param, chat_template=True)


def _decode_span(tok, fp, role):
    a, b = fp.spans[role]
    return tok.decode(list(fp.input_ids[a:b]))


@pytest.mark.parametrize("template", TEMPLATES)
def test_spans_cover_exactly_the_parts(tok, template):
    it = item()
    fp = format_prompt(it, tok, template)
    # the text contains the parts where char_spans say
    cs, ce = fp.char_spans["context"]
    qs, qe = fp.char_spans["question"]
    assert fp.text[cs:ce] == it.context and fp.text[qs:qe] == it.question
    # the token spans decode to the parts (BPE tokens may carry the space before)
    assert _decode_span(tok, fp, "context").strip() == it.context
    assert _decode_span(tok, fp, "question").strip() == it.question
    # the tokens just outside the spans are not part of them
    a, b = fp.spans["context"]
    assert fp.offsets[a - 1][1] <= cs and fp.offsets[b][0] >= ce
    assert fp.spans["final"] == (len(fp.input_ids) - 1, len(fp.input_ids))
    assert fp.spans["context"][1] <= fp.spans["question"][0]
    # input_ids are what the tokenizer gives for this text
    ids = tok(fp.text, add_special_tokens=(template != "chat"))["input_ids"]
    assert list(fp.input_ids) == list(ids)


def test_bos_flag(tok):
    fp = format_prompt(item(), tok, "alpaca")
    if tok.bos_token == "<s>":  # sp kind adds a BOS
        assert fp.has_bos and fp.input_ids[0] == tok.bos_token_id
        assert fp.spans["context"][0] > 0
    else:
        assert not fp.has_bos and fp.input_ids[0] != tok.bos_token_id
    chat = format_prompt(item(), tok, "chat")
    assert chat.has_bos  # the test chat template renders the BOS text itself
    assert chat.input_ids.count(tok.bos_token_id) == 1  # and it is not added twice


def test_closed_book_has_no_context(tok):
    for template in TEMPLATES:
        fp = format_prompt(item(), tok, template, with_context=False)
        assert "context" not in fp.spans and "Lyon" not in fp.text
        assert _decode_span(tok, fp, "question").strip() == item().question


def test_alpaca_shape_and_quote_prefix_last(tok):
    fp = format_prompt(item(), tok, "alpaca")
    assert fp.text.startswith("Below is an instruction") and fp.text.endswith("### Response:\n")
    q = format_prompt(quote_item(), tok, "alpaca")
    assert q.text.endswith("Absence makes the heart grow")
    assert q.spans["question"][1] == len(q.input_ids)  # quote prefix ends the prompt
    p = format_prompt(item(), tok, "plain")
    assert p.text.endswith("\nAnswer:")


def test_left_truncation_flags_and_keeps_question(tok):
    it = item(context=" ".join(["The capital of France is Paris."] * 20) + " The capital of Germany is Lyon.")
    full = format_prompt(it, tok, "alpaca")
    limit = full.n_tokens - 40
    fp = format_prompt(it, tok, "alpaca", max_length=limit)
    assert fp.truncated and not full.truncated
    assert fp.n_tokens <= limit
    cs, ce = fp.char_spans["context"]
    kept = fp.text[cs:ce]
    assert it.context.endswith(kept) and len(kept) < len(it.context)  # cut from the left
    assert kept.endswith("Germany is Lyon.")
    assert _decode_span(tok, fp, "question").strip() == it.question
    assert not format_prompt(it, tok, "alpaca", max_length=full.n_tokens).truncated
    assert not fp.answer_cut  # "Lyon" is at the end of the context and survives


def test_truncation_that_cuts_the_answer_is_flagged_and_counted(tok, caplog):
    first = item(context="In this story the capital of Germany is Lyon. " + " ".join(["It rains a lot."] * 30))
    last = item(id="w2", context=" ".join(["It rains a lot."] * 30) + " The capital of Germany is Lyon.")
    limit = format_prompt(first, tok, "alpaca").n_tokens - 40
    with caplog.at_level("WARNING", logger="fullscale.prompts"):
        fps = format_prompts([first, last], tok, "alpaca", max_length=limit)
    assert [fp.truncated for fp in fps] == [True, True]
    assert [fp.answer_cut for fp in fps] == [True, False]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "1 of 2 items lost their context answer" in warnings[0] and "w1" in warnings[0]


def test_too_long_even_without_context_raises(tok):
    with pytest.raises(CpiError, match="item w1: prompt is .* longer than max_length=5"):
        format_prompt(item(), tok, "alpaca", max_length=5)
    with pytest.raises(CpiError, match="closed-book"):
        format_prompt(item(), tok, "plain", with_context=False, max_length=3)


def test_bad_template_and_missing_chat_template():
    tok = make_tokenizer("bpe", chat_template=False)
    with pytest.raises(CpiError, match="plain, alpaca, chat"):
        format_prompt(item(), tok, "vicuna")
    with pytest.raises(CpiError, match="item w1: .*chat template"):
        format_prompt(item(), tok, "chat")


def test_format_prompts_and_max_length():
    tok = make_tokenizer("sp")
    items = sample_items(3)
    fps = format_prompts(items, tok, "plain")
    assert [f.item_id for f in fps] == [i.id for i in items]
    assert model_max_length(None, tok) is None  # the tiny tokenizer's limit is the "infinite" sentinel


LLAMA2_TEMPLATE = (  # the shape of Llama-2/Mistral-instruct templates: the reply follows "[/INST]" after a space
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


@pytest.mark.parametrize("kind", ["sp", "bpe"])
def test_chat_prompts_end_as_the_template_starts_a_reply(kind):
    """Quote prefixes follow '[/INST] ' like the template's own reply; QA prompts stop before the reply's space."""
    tok = make_tokenizer(kind)
    tok.chat_template = LLAMA2_TEMPLATE
    q = quote_item()
    fp = format_prompt(q, tok, "chat")
    assert fp.text.endswith("[/INST] Absence makes the heart grow")
    reply = tok.apply_chat_template([{"role": "user", "content": q.context},
                                     {"role": "assistant", "content": q.question}], tokenize=False)
    assert reply.startswith(fp.text)
    qa = format_prompt(item(), tok, "chat")
    assert qa.text.endswith("[/INST]")
    user = qa.text.split("[INST] ", 1)[1].rsplit(" [/INST]", 1)[0]
    full = tok.apply_chat_template([{"role": "user", "content": user}, {"role": "assistant", "content": "Lyon"}],
                                   tokenize=False)
    assert full.startswith(qa.text + " Lyon")
    # token level: the prompt's tokens are a prefix of the template's full exchange
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    assert full_ids[: qa.n_tokens] == list(qa.input_ids)
