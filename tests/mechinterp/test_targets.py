"""The logit difference is defined for every item: answers are compared at their first differing token.

Known answers on tokenizers where the two answers share leading tokens (years "1867"/"1871",
"Kharkiv"/"Kyiv", "Nobel Prize in ..."; a bare space token first), the shared prefix appended to
the prompt, items without a differing token dropped with a count, and the real logit difference at
the divergence position equal to a plain HF forward over prompt + shared prefix.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fullscale.conflicts import ConflictItem
from mechinterp.probe import (UndefinedTargetError, answer_target, prepare_items, probe, probe_arrays,
                              recon_rel_err, targets_table)
from tests.mechinterp.helpers import conflict_items, load_tiny
from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

PROMPT = "Question: When was she born?\nAnswer:"
# (context, parametric, shared prefix, context piece, parametric piece); the Metaspace tokenizer writes
# " Physics" as a bare "▁" then "P", so there the divergent context token is whitespace only
PAIRS = [("1867", "1871", "18", {"6"}, {"7"}), ("Kharkiv", "Kyiv", "K", {"h"}, {"y"}),
         ("Nobel Prize in Physics", "Nobel Prize in Chemistry", "Nobel Prize in", {"P", ""}, {"C"})]


@pytest.mark.parametrize("kind", ["sp", "bpe"])
@pytest.mark.parametrize("ctx, par, shared, c_piece, p_piece", PAIRS)
def test_first_differing_token_known_answers(kind, ctx, par, shared, c_piece, p_piece):
    tok = make_tokenizer(kind)
    ids = tok(PROMPT)["input_ids"]
    tg = answer_target(tok, PROMPT, ids, ctx, par, "x")
    assert tok.decode(list(tg.shared)).strip() == shared
    assert tok.decode([tg.context_token]).strip() in c_piece and tok.decode([tg.parametric_token]).strip() in p_piece
    assert tg.context_token != tg.parametric_token
    assert tg.context_form == tg.parametric_form == "joint"
    # prompt + shared prefix + divergent token is a prefix of the tokenized prompt + answer
    full = tok(PROMPT + " " + ctx)["input_ids"]
    assert full[:len(ids) + len(tg.shared) + 1] == list(ids) + list(tg.shared) + [tg.context_token]


def test_answers_without_a_differing_token_are_refused():
    tok = make_tokenizer("bpe")
    ids = tok(PROMPT)["input_ids"]
    with pytest.raises(UndefinedTargetError, match="tokenize identically"):
        answer_target(tok, PROMPT, ids, "Paris", "Paris", "same")
    with pytest.raises(UndefinedTargetError, match="prefixes of one another"):
        answer_target(tok, PROMPT, ids, "1867", "18670", "prefix")


def _items():
    base = dict(dataset="CF_Test", category="birth_year", question="When was Ada born?",
                context="In this story Ada was born in 1867.")
    return [ConflictItem(id="year", context_answer="1867", parametric_answer="1871", **base),
            ConflictItem(id="same", context_answer="1867", parametric_answer="1867", **base),
            ConflictItem(id="prefix", context_answer="1867", parametric_answer="18670", **base),
            ConflictItem(id="city", dataset="CF_Test", category="capital", question="What is the capital of Ukraine?",
                         context="In this story the capital of Ukraine is Kharkiv.", context_answer="Kharkiv",
                         parametric_answer="Kyiv")] + conflict_items(3)


def test_undefined_items_dropped_with_count_and_recorded(caplog):
    tok = make_tokenizer("sp")
    with caplog.at_level(logging.WARNING, logger="mechinterp.probe"):
        pitems = prepare_items(_items(), tok, template="plain")
    assert [p.item_id for p in pitems] == ["year", "city", "CF_Test-0", "CF_Test-1", "CF_Test-2"]
    assert "dropped 2 of 7 items" in caplog.text and "same" in caplog.text
    by_id = {p.item_id: p for p in pitems}
    assert by_id["year"].shared_prefix_len == 2 and by_id["city"].shared_prefix_len >= 1
    t = targets_table(_items(), tok, template="plain").set_index("item_id")
    assert list(t["status"]).count("dropped") == 2 and t.loc["same", "shared_prefix_len"] == -1
    assert t.loc["year", "shared_prefix"].strip() == "18"
    assert (t.loc["year", "context_piece"], t.loc["year", "parametric_piece"]) == ("6", "7")
    assert "identically" in t.loc["same", "reason"]
    assert t.loc["year", "answer_forms"] == "joint,joint"


@pytest.mark.parametrize("template", ["plain", "alpaca"])
def test_probe_reads_the_divergence_position(tmp_path, template):
    """No used item has a structural zero; the real logit difference is an HF forward over prompt +
    shared prefix at the two divergent tokens; the prefix tokens are 'other'; reconciliation holds."""
    from transformers import AutoModelForCausalLM

    path = make_tiny_checkpoint(tmp_path / "m", "llama", seed=5)
    bridge, tok = load_tiny(path)
    pitems, arr = probe_arrays(bridge, tok, _items(), template=template, batch_size=3)
    assert len(pitems) == 5
    assert all(p.context_token != p.parametric_token for p in pitems)
    assert np.all(np.abs(arr["logit_diff"]) > 0)
    assert np.all(recon_rel_err(arr) < 1e-3)
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    for it, ld in zip(pitems, arr["logit_diff"]):
        assert it.span_mask()[len(it.input_ids) - it.shared_prefix_len:] == ["other"] * it.shared_prefix_len
        with torch.no_grad():
            last = hf(torch.tensor([it.input_ids])).logits[0, -1]
        assert abs(float(last[it.context_token] - last[it.parametric_token]) - ld) < 1e-4
    table = probe(bridge, tok, _items(), template=template)
    spl = table[(table.metric == "shared_prefix_len")].set_index("item_id")["value"]
    assert spl["year"] == 2 and spl["CF_Test-0"] == 0 and "same" not in spl.index
