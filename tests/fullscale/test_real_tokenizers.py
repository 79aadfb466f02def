"""The scorer and the prompts on a real model and its real tokenizer (SmolLM2-135M-Instruct, marked ``real``).

What tiny test tokenizers never show: a real chat template with a system turn, byte-level BPE merges
across the prompt boundary on the shipped quote set, and real generations with newlines in them.
"""

from __future__ import annotations

import pytest

from fullscale.conflicts import load_conflicts
from fullscale.prompts import format_prompt, format_prompts
from fullscale.scoring import answer_sequence, score_items, score_logprob

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2(real_smollm2):
    from fullscale.checkpoints import load_checkpoint

    return load_checkpoint(real_smollm2, device="cpu")


def test_chat_prompt_ends_as_the_template_starts_a_reply(smollm2):
    _, tok = smollm2
    it = load_conflicts("CF_World_Facts")[0]
    fp = format_prompt(it, tok, "chat")
    assert fp.text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    q = load_conflicts("CF_Quotes")[0]
    fq = format_prompt(q, tok, "chat")
    exchange = tok.apply_chat_template([{"role": "user", "content": q.context},
                                        {"role": "assistant", "content": q.question + " " + q.parametric_answer}],
                                       tokenize=False)
    assert exchange.startswith(fq.text)
    ids = tok(exchange, add_special_tokens=False)["input_ids"]
    assert ids[: fq.n_tokens] == list(fq.input_ids)


def test_every_quote_answer_form_is_conditioned_on_the_prompt(smollm2):
    """On the shipped quotes, 'grow'+'fonder'-style merges happen; each form still starts with the prompt's tokens."""
    _, tok = smollm2
    items = load_conflicts("CF_Quotes")
    merged = 0
    for it, fp in zip(items, format_prompts(items, tok, "plain")):
        for ans in (it.context_answer, it.parametric_answer):
            for form in (ans, " " + ans):
                seq = answer_sequence(tok, fp, form, add_special=True)
                assert list(seq.ids[: seq.start]) == list(fp.input_ids), it.id
                assert tok.decode(seq.ids[seq.start:]) == form, it.id
                merged += seq.boundary_merge
    assert merged > 10  # the real tokenizer does merge "...than" + "thunder": the case this guards is real


def test_real_scores_batched_equal_unbatched_and_know_a_capital(smollm2):
    model, tok = smollm2
    items = load_conflicts("CF_World_Facts")[:3] + load_conflicts("CF_Quotes")[:2]
    one = score_logprob(model, tok, items, "chat", batch_size=1)
    many = score_logprob(model, tok, items, "chat", batch_size=5, share_prefix=False)
    assert (one["margin"] - many["margin"]).abs().max() < 1e-3
    table = score_items(model, tok, items[:3], "chat", modes=("generate", "closed_book"), batch_size=3,
                        max_new_tokens=12)
    # closed book, the instruct model names at least one of these three real capitals
    assert table["cb_param_correct"].astype(bool).any()
