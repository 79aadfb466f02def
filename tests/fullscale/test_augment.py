"""Counterfactual augmentation: swapped answers, evaluation items kept out, mixing fraction."""

from __future__ import annotations

import pytest

from cpi.errors import CpiError
from fullscale.augment import (augment_data, context_key, find_leaks, generate_counterfactual_examples,
                               mix_augmentation, n_augment_for)
from fullscale.conflicts import contains_word, load_conflicts
from fullscale.ift_data import load_ift_data
from tests.fullscale.ft_helpers import alpaca_records, conflict_records, write_jsonl


@pytest.fixture()
def sets(tmp_path):
    train = write_jsonl(tmp_path / "train_conf.jsonl", conflict_records("tr"))
    # evaluation set: two items share ids with the training set, one is a training passage under a new id,
    # one is a training passage with another answer (the same passage up to the answer)
    tr = conflict_records("tr")
    ev = [dict(tr[0]), dict(tr[6])]
    copy = dict(tr[1], id="ev-copy")
    swapped = dict(tr[2], id="ev-swapped", context=tr[2]["context"].replace("Hamburg", "Munich"),
                   context_answer="Munich")
    evaluation = write_jsonl(tmp_path / "eval_conf.jsonl", ev + [copy, swapped])
    return {"train": train, "eval": evaluation, "tmp": tmp_path}


def test_swaps_answers_within_category(sets):
    aug = generate_counterfactual_examples([str(sets["train"])], seed=0)
    items = {it.id: it for it in load_conflicts(sets["train"])}
    assert len(aug) == len(items) == 10
    for ex in aug:
        src = items[ex.meta["augment_item"]]
        new = ex.output
        assert new == ex.meta["augment_answer"]
        assert new not in (src.context_answer, src.parametric_answer)
        # the passage now asserts the new answer and no longer the old one
        passage = ex.input.split("\nQuestion: ")[0]
        assert contains_word(passage, new) and not contains_word(passage, src.context_answer)
        assert ex.input.endswith(f"Question: {src.question}")
        same_cat = {a for it in items.values() if it.category == src.category
                    for a in (it.context_answer, it.parametric_answer)}
        assert new in same_cat
    assert [e.output for e in aug] == [e.output for e in generate_counterfactual_examples([str(sets["train"])], seed=0)]


def test_no_evaluation_id_or_context_leaks(sets):
    aug = generate_counterfactual_examples([str(sets["train"])], exclude=[str(sets["eval"])], seed=0,
                                           variants_per_item=3)
    evaluation = load_conflicts(sets["eval"])
    used = {ex.meta["augment_item"] for ex in aug}
    # by id (tr-cap-0, tr-born-0), by identical context (tr-cap-1), by passage-up-to-the-answer (tr-cap-2)
    assert used.isdisjoint({"tr-cap-0", "tr-born-0", "tr-cap-1", "tr-cap-2"})
    assert used == {"tr-cap-3", "tr-cap-4", "tr-cap-5", "tr-born-1", "tr-born-2", "tr-born-3"}
    assert find_leaks(aug, evaluation) == []
    eval_ids = {it.id for it in evaluation}
    eval_keys = {context_key(it) for it in evaluation}
    for ex in aug:
        assert ex.meta["augment_item"] not in eval_ids
        assert not any(it.context.lower() in ex.input.lower() for it in evaluation)
    train_items = {it.id: it for it in load_conflicts(sets["train"])}
    assert not {context_key(train_items[i]) for i in used} & eval_keys
    # the leak checker itself catches a leak
    leaky = generate_counterfactual_examples([str(sets["train"])], seed=0)
    assert find_leaks(leaky, evaluation)


def test_everything_excluded_is_an_error(sets, tmp_path):
    ift = load_ift_data(write_jsonl(tmp_path / "ift.jsonl", alpaca_records(8)))
    with pytest.raises(CpiError, match="needs 1 examples but the conflict sets yield 0"):
        augment_data(ift, [str(sets["train"])], [str(sets["train"])], 0.1)


def test_mixing_fraction_and_variants(sets, tmp_path):
    ift = load_ift_data(write_jsonl(tmp_path / "ift.jsonl", alpaca_records(16)))
    assert n_augment_for(90, 0.1) == 10 and n_augment_for(16, 0.2) == 4 and n_augment_for(5, 0.0) == 0
    mixed, n = augment_data(ift, [str(sets["train"])], [], 0.2, seed=1)
    assert n == 4 and len(mixed) == 20 and sum(e.id.startswith("aug-") for e in mixed) == 4
    # more than one variant per item when the fraction needs it
    mixed, n = augment_data(ift, [str(sets["train"])], [], 0.5, seed=1)
    assert n == 16 and len({e.id for e in mixed}) == 32
    with pytest.raises(CpiError, match="needs 16 examples but the conflict sets yield 3"):
        mix_augmentation(ift, generate_counterfactual_examples([str(sets["train"])])[:3], 0.5)


def test_cli_augment(sets, tmp_path, capsys):
    from cpi.cli import main

    data = write_jsonl(tmp_path / "ift.jsonl", alpaca_records(18))
    out = tmp_path / "aug.jsonl"
    assert main(["data", "augment", "--conflicts", str(sets["train"]), "--exclude", str(sets["eval"]),
                 "--fraction", "0.1", "--data", str(data), "--out", str(out)]) == 0
    mixed = load_ift_data(out)
    aug = [e for e in mixed if e.id.startswith("aug-")]
    assert len(mixed) == 20 and len(aug) == 2
    assert find_leaks(aug, load_conflicts(sets["eval"])) == []
    assert all(e.meta["augment_source"] == "CF_Test" for e in aug)
    assert main(["data", "augment", "--conflicts", str(tmp_path / "nope.jsonl"), "--fraction", "0.1",
                 "--data", str(data), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_shipped_sets_when_present():
    from fullscale.conflicts import SHIPPED_DATASETS, shipped_path

    if not shipped_path(SHIPPED_DATASETS[0]).is_file():
        pytest.skip("shipped conflict sets not built in this checkout")
    aug = generate_counterfactual_examples(["CF_Bio"], exclude=["CF_World_Facts"], seed=0)
    assert aug and find_leaks(aug, load_conflicts("CF_World_Facts")) == []


def test_augmented_prompts_match_the_evaluation_prompts(sets):
    """An augmented example's training prompt is exactly the evaluation prompt of the same passage
    and question (with context), and its context-free form is the evaluation's closed-book prompt."""
    from dataclasses import replace

    from fullscale.ift_data import render_segments
    from fullscale.prompts import format_prompt
    from tests.tiny_models import make_tokenizer

    tok = make_tokenizer("bpe")
    ex = generate_counterfactual_examples([str(sets["train"])], seed=0)[0]
    src = next(it for it in load_conflicts(sets["train"]) if it.id == ex.meta["augment_item"])
    swapped = replace(src, context=ex.context, context_answer=ex.output, context_answer_spans=())
    for with_context, example in ((True, ex), (False, ex.without_context())):
        prompt, response = render_segments(example, tok, "alpaca")
        assert not prompt[1] and response == (ex.output + tok.eos_token, True)
        assert prompt[0] == format_prompt(swapped, tok, "alpaca", with_context=with_context).text
    assert ex.qa_question == src.question and ex.output not in ex.without_context().instruction
