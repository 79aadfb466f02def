"""The context-reliance scorer (fullscale.scoring): matching, log-probs, batching, summaries."""

from __future__ import annotations

import math

import pytest
import torch

from cpi.errors import CpiError
from fullscale.checkpoints import load_checkpoint
from fullscale.prompts import format_prompt
from fullscale.scoring import (
    bootstrap_ci,
    classify_output,
    cut_at_stops,
    generate_outputs,
    match_answer,
    memorization_ratio,
    normalize_text,
    score_generation,
    score_items,
    score_logprob,
    summarize_items,
    summarize_reliance,
)
from tests.fullscale.evalkit import item, quote_item, sample_items
from tests.fullscale.evalkit import one_torch_thread
from tests.tiny_models import make_tiny_checkpoint


# --------------------------------------------------------------------------- matching on hand-made outputs

def test_normalize():
    assert normalize_text("  São-Paulo!!  ") == "sao paulo"
    assert normalize_text("The Hague.\n") == "the hague"


@pytest.mark.parametrize("output,answers,expected", [
    ("The capital is Lyon.", ["Lyon"], True),
    ("LYON!!!", ["Lyon"], True),                               # case + punctuation
    ("lyon,", ["Lyon"], True),
    ("It is in Sao Paulo", ["São Paulo"], True),              # accents
    ("the answer: NYC", ["New York City", "NYC"], True),      # alias
    ("the answer: new york city.", ["New York City", "NYC"], True),
    ("It was Isaac   Newton.", ["Isaac Newton"], True),       # multi-token answer, odd spacing
    ("It was Isaac.", ["Isaac Newton"], False),               # only part of a multi-word answer
    ("Romeo and Juliet", ["Rome"], False),                    # answer inside another word
    ("a Parisian cafe", ["Paris"], False),
    ("Lyonnais food", ["Lyon"], False),
    ("Berlin-Mitte", ["Berlin"], True),                        # hyphen is a word boundary
    ("", ["Lyon"], False),
])
def test_match_answer(output, answers, expected):
    assert match_answer(output, answers) is expected


def test_outcomes():
    ctx, par = ("Lyon",), ("Berlin",)
    assert classify_output("Lyon.", ctx, par)["outcome"] == "context"
    assert classify_output("It is Berlin", ctx, par)["outcome"] == "parametric"
    assert classify_output("Lyon, not Berlin", ctx, par)["outcome"] == "both"
    assert classify_output("Lyonnais Berliner", ctx, par)["outcome"] == "neither"
    r = classify_output("NYC", ("New York City", "NYC"), ("Boston",))
    assert r["cf_correct"] and not r["param_correct"] and r["matched_context"] == "NYC"


def test_nested_answers_count_the_longer_only():
    # context answer "York" lies inside the parametric answer "New York"
    assert classify_output("New York", ("York",), ("New York",))["outcome"] == "parametric"
    assert classify_output("York, then New York", ("York",), ("New York",))["outcome"] == "both"
    assert classify_output("York", ("York",), ("New York",))["outcome"] == "context"


def test_cut_at_stops():
    assert cut_at_stops(" Lyon\n\nQuestion: What is the capital of France? Paris") == "Lyon"
    assert cut_at_stops("\n\nLyon") == "Lyon"   # a stop at the very start does not empty the answer
    assert cut_at_stops("Lyon ### Response: Berlin") == "Lyon"


# --------------------------------------------------------------------------- model-based scoring

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    out = {}
    for arch in ("llama", "neox", "mistral"):
        out[arch] = load_checkpoint(make_tiny_checkpoint(root / arch, arch=arch, seed=1), device="cpu", dtype="float32")
    return out


def _hand_logprob(model, ids, start):
    """Sum of log p(ids[t] | ids[:t]) for t >= start, one unpadded forward per prefix."""
    total = 0.0
    for t in range(start, len(ids)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
        total += float(torch.log_softmax(logits.double(), -1)[ids[t]])
    return total


@pytest.mark.parametrize("arch,nospace_tokens,space_tokens", [
    ("neox", ["Ly", "on"], ["ĠLyon"]),      # byte-level BPE: the space is part of the first token
    ("llama", ["Ly", "on"], ["▁Lyon"]),     # sentencepiece-style: "▁" marks the space
])
def test_leading_space_matches_hand_computed_logprob(models, arch, nospace_tokens, space_tokens):
    model, tok = models[arch]
    it = item()
    fp = format_prompt(it, tok, "plain")  # ends with "Answer:"
    row = score_logprob(model, tok, [it], template="plain", batch_size=1).iloc[0]
    for form, pieces in (("nospace", nospace_tokens), ("space", space_tokens)):
        ans_ids = tok.convert_tokens_to_ids(pieces)
        assert tok.unk_token_id not in ans_ids
        want = _hand_logprob(model, list(fp.input_ids) + ans_ids, len(fp.input_ids))
        assert row[f"logp_context_{form}"] == pytest.approx(want, abs=1e-4)
        assert row[f"ntok_context_{form}"] == len(pieces)
    # the two forms are different token sequences, so their probabilities add
    want = math.log(math.exp(row["logp_context_nospace"]) + math.exp(row["logp_context_space"]))
    assert row["logp_context"] == pytest.approx(want, abs=1e-9)
    assert row["margin"] == pytest.approx(row["logp_context"] - row["logp_parametric"])
    assert row["reliance"] == pytest.approx(1 / (1 + math.exp(-row["margin"])))
    assert not row["boundary_merge"]


def test_tokenizing_the_answer_alone_would_be_wrong(models):
    """Why answers are tokenized together with the prompt: alone, sentencepiece prepends '▁'."""
    _, tok = models["llama"]
    alone = tok.convert_ids_to_tokens(tok("Lyon", add_special_tokens=False)["input_ids"])
    joint = tok.convert_ids_to_tokens(tok("Answer:Lyon", add_special_tokens=False)["input_ids"])
    assert alone == ["▁Lyon"] and joint[-2:] == ["Ly", "on"]


@pytest.mark.parametrize("arch", ["llama", "neox", "mistral"])
@pytest.mark.parametrize("template", ["alpaca", "plain"])
def test_batched_equals_unbatched(models, arch, template):
    model, tok = models[arch]
    items = sample_items(5) + [quote_item(), item(id="long", context="A long story. " * 12 + "Germany has Lyon.")]
    one = score_logprob(model, tok, items, template=template, batch_size=1)
    many = score_logprob(model, tok, items, template=template, batch_size=7)
    for col in ("logp_context_nospace", "logp_context_space", "logp_parametric_nospace", "logp_parametric_space",
                "margin"):
        assert (one[col] - many[col]).abs().max() < 1e-4, col
    assert list(one["item_id"]) == [i.id for i in items]


@pytest.mark.parametrize("arch", ["llama", "neox"])
def test_batched_generation_left_padding_equals_one_at_a_time(models, arch):
    model, tok = models[arch]
    items = sample_items(4) + [quote_item(), item(id="long", context="A long story. " * 10 + "Germany has Lyon.")]
    prompts = [format_prompt(i, tok, "alpaca") for i in items]
    assert len({p.n_tokens for p in prompts}) > 1  # padding really happens
    single = generate_outputs(model, tok, prompts, batch_size=1, max_new_tokens=6)
    batched = generate_outputs(model, tok, prompts, batch_size=6, max_new_tokens=6)
    assert single == batched
    # and it is the model's own greedy continuation
    ids = list(prompts[-1].input_ids)
    for _ in range(3):
        with torch.no_grad():
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    eos = tok.eos_token_id
    new = ids[len(prompts[-1].input_ids):]
    if eos not in new:
        assert single[-1].startswith(tok.decode(new, skip_special_tokens=True))


def test_answer_ended_ignores_a_stop_before_the_answer():
    from fullscale.scoring import answer_ended

    assert not answer_ended("\n\n  Paris", ("\n",)) and not answer_ended("Paris", ("\n",))
    assert answer_ended("\n Paris\n", ("\n",)) and answer_ended("Paris ###", ("\n", "###"))
    assert not answer_ended("Paris ##", ("###",))


@pytest.mark.parametrize("stops", [("r",), ("or", "W")])
def test_generation_stops_where_the_answer_ends_and_the_answer_is_unchanged(models, stops):
    """Rows stop once their text holds a stop (a multi-token one too); the answer cut at the stops is the
    unstopped one's, the raw output its prefix, and a batch whose rows have all ended stops early."""
    model, tok = models["neox"]
    prompts = [format_prompt(i, tok, "alpaca") for i in sample_items(6)]
    calls = []
    hook = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        full = generate_outputs(model, tok, prompts, batch_size=3, max_new_tokens=16)
        n_full, calls[:] = len(calls), []
        stopped = generate_outputs(model, tok, prompts, batch_size=3, max_new_tokens=16, stops=stops)
        n_stopped = len(calls)
    finally:
        hook.remove()
    assert [cut_at_stops(t, stops) for t in stopped] == [cut_at_stops(t, stops) for t in full]
    assert all(f.startswith(t) for f, t in zip(full, stopped)), (full, stopped)
    assert sum(len(t) < len(f) for f, t in zip(full, stopped)) >= 4  # most rows really stopped early
    assert n_stopped < n_full  # fewer forward passes: the batches ended before max_new_tokens


def test_score_generation_columns(models):
    model, tok = models["neox"]
    df = score_generation(model, tok, sample_items(3), template="alpaca", batch_size=2, max_new_tokens=4)
    assert list(df["item_id"]) == [f"CF_Test-{i}" for i in range(3)]
    assert set(df["outcome"]) <= {"context", "parametric", "both", "neither"}
    for _, r in df.iterrows():  # the recorded outcome is what the matcher says about the recorded text
        assert r["cf_correct"] == match_answer(r["answer_text"], [sample_items(3)[int(r["item_id"][-1])].context_answer])


def test_score_items_closed_book_and_known(models):
    model, tok = models["llama"]
    items = sample_items(4)
    df = score_items(model, tok, items, template="plain", batch_size=4, max_new_tokens=4)
    for col in ("output", "margin", "cb_output", "cb_prompt", "cb_margin", "knows_parametric", "cb_param_correct"):
        assert col in df
    assert not any("Lyon" in p for p in df["cb_prompt"])  # no context in the closed-book prompt
    assert (df["knows_parametric"] == df["cb_param_correct"]).all()
    lp_only = score_items(model, tok, items, template="plain", modes=("logprob", "closed_book"))
    assert "output" not in lp_only and (lp_only["knows_parametric"] == (lp_only["cb_margin"] < 0)).all()
    with pytest.raises(CpiError, match="unknown mode 'judge'"):
        score_items(model, tok, items, modes=("judge",))


def test_overlong_prompt_truncates_context(tmp_path):
    short = load_checkpoint(make_tiny_checkpoint(tmp_path / "short", arch="llama", max_position_embeddings=100))
    model, tok = short
    it = item(id="big", context="The capital of France is Paris. " * 20 + "Germany's capital is Lyon.")
    df = score_logprob(model, tok, [it], template="plain")
    assert bool(df["truncated"].iloc[0]) and math.isfinite(df["margin"].iloc[0])
    gen = score_generation(model, tok, [it], template="plain", max_new_tokens=8)
    assert bool(gen["truncated"].iloc[0])
    assert len(tok(gen["prompt"].iloc[0])["input_ids"]) <= 100 - 8
    with pytest.raises(CpiError, match="item big: prompt is .* longer than max_length"):
        score_logprob(model, tok, [it], template="alpaca", max_length=30)


# --------------------------------------------------------------------------- summaries

def test_summaries():
    import pandas as pd

    assert memorization_ratio(["context", "parametric", "parametric", "both", "neither"]) == pytest.approx(2 / 3)
    assert math.isnan(memorization_ratio(["both"]))
    lo, hi = bootstrap_ci([0, 1] * 50, n_boot=500, seed=1)
    assert lo < 0.5 < hi and (lo, hi) == bootstrap_ci([0, 1] * 50, n_boot=500, seed=1)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)
    df = pd.DataFrame({
        "checkpoint": ["a"] * 4, "step": [0] * 4, "dataset": ["D"] * 4, "category": ["x", "x", "y", "y"],
        "cf_correct": [True, False, True, True], "param_correct": [False, True, False, False],
        "outcome": ["context", "parametric", "context", "context"],
        "margin": [1.0, -1.0, 2.0, 0.5], "reliance": [0.7, 0.3, 0.9, 0.6], "prefers_context": [True, False, True, True],
        "knows_parametric": [True, True, False, False], "cb_param_correct": [True, True, False, False],
        "truncated": [True, True, False, False], "answer_cut": [True, False, False, False],
    })
    s = summarize_items(df, n_boot=200)
    allrow = s[s["category"] == "ALL"].iloc[0]
    assert allrow["n"] == 4 and allrow["cf_acc"] == 0.75 and allrow["param_acc"] == 0.25
    assert allrow["n_truncated"] == 2 and allrow["n_answer_cut"] == 1
    assert allrow["cf_acc_lo"] <= 0.75 <= allrow["cf_acc_hi"]
    assert allrow["cf_acc_known"] == 0.5 and allrow["known_rate"] == 0.5
    assert allrow["memorization_ratio"] == pytest.approx(0.25)
    x = s[s["category"] == "x"].iloc[0]
    assert x["cf_acc"] == 0.5 and x["mean_margin"] == 0.0
    r = summarize_reliance(df)
    assert r["n"] == 4 and r["context_pref_rate"] == 0.75 and r["mean_margin"] == pytest.approx(0.625)


@pytest.mark.parametrize("arch", ["llama", "neox", "mistral"])
def test_shared_prefix_equals_full_sequences(models, arch):
    """The KV-cache path (prompt once, four answers on top) gives the full-sequence numbers."""
    model, tok = models[arch]
    items = sample_items(4) + [quote_item(), item(id="multi", context_answer="Lyon Saint Exupery",
                                                  context="Germany's capital is Lyon Saint Exupery.")]
    shared = score_logprob(model, tok, items, template="alpaca", batch_size=3, share_prefix=True)
    full = score_logprob(model, tok, items, template="alpaca", batch_size=1, share_prefix=False)
    for col in ("logp_context_nospace", "logp_context_space", "logp_parametric_nospace", "logp_parametric_space"):
        assert (shared[col] - full[col]).abs().max() < 1e-4, col
    assert (shared["ntok_context_space"] == full["ntok_context_space"]).all()
    assert shared.loc[shared["item_id"] == "multi", "ntok_context_space"].iloc[0] > 1


def test_chat_template_scoring_uses_rendered_bos_once(tmp_path):
    from tests.tiny_models import make_tokenizer

    path = make_tiny_checkpoint(tmp_path / "chat", arch="llama", tokenizer=make_tokenizer("sp", chat_template=True))
    model, tok = load_checkpoint(path)
    it = item()
    fp = format_prompt(it, tok, "chat")
    assert fp.input_ids[0] == tok.bos_token_id and fp.input_ids.count(tok.bos_token_id) == 1
    row = score_logprob(model, tok, [it], template="chat").iloc[0]
    ans = tok(fp.text + " Lyon", add_special_tokens=False)["input_ids"]
    assert ans[: len(fp.input_ids)] == list(fp.input_ids)
    assert row["logp_context_space"] == pytest.approx(_hand_logprob(model, ans, len(fp.input_ids)), abs=1e-4)


def test_peft_wrapped_model_scores_like_full_sequences(models):
    """The finetuning loop scores a live PEFT model: the shared-prompt path must work through the wrapper."""
    from peft import LoraConfig, get_peft_model

    model, tok = models["mistral"]
    import copy

    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False)).eval()
    items = sample_items(3)
    shared = score_logprob(wrapped, tok, items, template="plain", share_prefix=True, batch_size=2)
    full = score_logprob(wrapped, tok, items, template="plain", share_prefix=False, batch_size=1)
    plain = score_logprob(model, tok, items, template="plain")
    assert (shared["margin"] - full["margin"]).abs().max() < 1e-4
    assert (shared["margin"] - plain["margin"]).abs().max() > 1e-4  # the adapter is really applied


def test_pad_batch_left_and_right_known_answer():
    from fullscale.batching import pad_batch

    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_batch([[5, 6, 7], [8], []], pad_id=-100, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, -100, -100], [-100, -100, -100]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="side must be 'left' or 'right'"):
        pad_batch([[1]], 0, side="middle")


@pytest.mark.parametrize("arch", ["llama", "neox"])
def test_answer_merging_across_the_boundary_is_conditioned_on_the_prompt(models, arch):
    """'... capital is Par' + 'is': tokenized together, 'Paris' swallows the prompt's last token.

    The scored sequence must still start with the prompt's own tokens (the log-prob is conditioned
    on the prompt, not on '... capital is'), decode to prompt + answer, and be flagged.
    """
    from fullscale.scoring import answer_sequence

    model, tok = models[arch]
    it = item(id="m1", context="Write a quote that ends in the word 'is':", question="The capital of France is Par",
              context_answer="is", parametric_answer="Rome", task="quote")
    fp = format_prompt(it, tok, "plain")
    joint = tok(fp.text + "is")["input_ids"]
    assert joint[: len(fp.input_ids)] != list(fp.input_ids)  # the tokenizer really merges here
    seq = answer_sequence(tok, fp, "is", add_special=True)
    assert seq.boundary_merge
    assert list(seq.ids[: seq.start]) == list(fp.input_ids)
    assert tok.decode(seq.ids[seq.start:]) == "is"
    row = score_logprob(model, tok, [it], template="plain", batch_size=1).iloc[0]
    assert row["merge_context_nospace"] and not row["merge_context_space"] and row["boundary_merge"]
    want = _hand_logprob(model, list(seq.ids), seq.start)
    assert row["logp_context_nospace"] == pytest.approx(want, abs=1e-4)
    # batched with other items and with the KV-cache path: the same number
    rows = score_logprob(model, tok, [it, *sample_items(3)], template="plain", batch_size=4, share_prefix=False)
    assert rows.iloc[0]["logp_context_nospace"] == pytest.approx(want, abs=1e-4)


# --------------------------------------------------------------------------- quote endings, aliases, length


@pytest.mark.parametrize("output,outcome,ending", [
    (" heavy.", "context", "heavy"),
    ("fonder", "parametric", "fonder"),
    ('"heavy," she said', "context", "heavy"),
    ("Sure! Here is the quote: heavy.", "context", "heavy"),               # preamble before a colon
    ("Absence makes the heart grow fonder.", "parametric", "fonder"),       # the prefix echoed, then the ending
    ("Sure: Absence makes the heart grow heavy", "context", "heavy"),       # both
    (" fonder. Some say it grows heavy instead.", "parametric", "fonder"),  # containment would say both
    (" bush. A heavy price.", "neither", "bush"),                           # containment would say context
    ("", "neither", ""),
])
def test_quote_scored_by_how_it_ends(output, outcome, ending):
    from fullscale.scoring import score_output

    r = score_output(quote_item(), output)
    assert (r["outcome"], r["ending"], r["scored_by"]) == (outcome, ending, "ending")
    contained = classify_output(output, ("heavy",), ("fonder",))
    assert (r["cf_contains"], r["param_contains"], r["outcome_contains"]) == (
        contained["cf_correct"], contained["param_correct"], contained["outcome"])


def test_qa_items_stay_scored_by_containment():
    from fullscale.scoring import score_output

    r = score_output(item(), "I think it is Lyon, not Berlin.")
    assert (r["outcome"], r["scored_by"], r["outcome_contains"], r["ending"]) == ("both", "containment", "both", "")


def test_alias_tables_apply_to_every_item_and_say_which_matched():
    from fullscale.aliases import accepted_forms, table_aliases
    from fullscale.scoring import score_output

    assert "Kiev" in table_aliases("Kyiv") and "Kyiv" in table_aliases("kiev")
    assert table_aliases("Queen Elizabeth II") == ("Elizabeth II",)
    assert table_aliases("Queen Victoria") == ()                   # one word left: the title stays
    kyiv = item(context="In this story the capital of Ukraine is Lviv.", question="What is the capital of Ukraine?",
                context_answer="Lviv", parametric_answer="Kyiv")
    r = score_output(kyiv, "Kiev.")
    assert r["outcome"] == "parametric" and r["matched_alias"] == "parametric:Kiev (table)"
    assert score_output(kyiv, "Kyiv")["matched_alias"] == ""
    queen = item(context="The song was written for King Charles III.", question="For whom was it written?",
                 context_answer="King Charles III", parametric_answer="Queen Elizabeth II")
    assert score_output(queen, "Elizabeth II")["outcome"] == "parametric"
    # a table form accepted for the other side is left out: no "both" from the table
    clash = item(context="In this story the city is Bombay.", question="Which city?", context_answer="Bombay",
                 parametric_answer="Mumbai")
    forms = accepted_forms(clash)
    assert "Mumbai" not in forms["context"] and "Bombay" not in forms["parametric"]


def test_length_robust_margins_by_hand():
    from fullscale.scoring import length_robust_margins

    # shared first token (id 5), differ at the second: the first differing token decides, not the length
    ctx = (-3.0, (5, 7), (-1.0, -2.0))
    par = (-9.0, (5, 8, 9, 10), (-1.0, -0.5, -4.0, -3.5))
    m = length_robust_margins(ctx, par, margin=6.0)
    assert m["margin_first_token"] == pytest.approx(-1.5)
    assert m["margin_per_token"] == pytest.approx(-1.5 - (-9.0 / 4))
    assert (m["ntok_diff"], m["answer_is_prefix"], m["decided_by_length"]) == (-2, False, True)
    pre = length_robust_margins((-1.0, (5,), (-1.0,)), (-3.0, (5, 6), (-1.0, -2.0)), margin=2.0)
    assert pre["answer_is_prefix"] and pre["margin_first_token"] == 2.0 and not pre["decided_by_length"]


def test_first_token_margin_matches_the_models_first_tokens(models):
    model, tok = models["llama"]
    its = sample_items(4)
    table = score_logprob(model, tok, its, template="plain", batch_size=2)
    for it, (_, row) in zip(its, table.iterrows()):
        fp = format_prompt(it, tok, "plain")
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([fp.input_ids])).logits[0, -1].double(), -1)
        best = {}
        for side, ans in (("context", it.context_answer), ("parametric", it.parametric_answer)):
            form = max(("nospace", "space"), key=lambda f: row[f"logp_{side}_{f}"])
            ids = tok(fp.text + (" " if form == "space" else "") + ans, add_special_tokens=True)["input_ids"]
            best[side] = ids[len(fp.input_ids)]
        if best["context"] != best["parametric"]:
            want = float(lp[best["context"]] - lp[best["parametric"]])
            assert row["margin_first_token"] == pytest.approx(want, abs=1e-4)
        assert row["decided_by_length"] == ((row["margin"] > 0) != (row["margin_first_token"] > 0))
    summary = summarize_items(table.assign(checkpoint="c"), n_boot=50)
    assert {"mean_margin_first_token", "mean_margin_per_token", "length_decided_rate"} <= set(summary.columns)
    assert summary["length_decided_rate"].between(0, 1).all()


def test_bootstrap_refuses_sizes_it_cannot_hold():
    from fullscale.stats import MAX_N_BOOT

    assert bootstrap_ci([1.0, 2.0, 3.0], n_boot=MAX_N_BOOT // 1000)[0] >= 1.0
    with pytest.raises(CpiError, match=r"n_boot: must be <= 1000000, got 1000000000000"):
        bootstrap_ci([1.0, 2.0], n_boot=10**12)


def test_non_finite_margins_are_flagged_not_averaged(caplog):
    import pandas as pd

    table = pd.DataFrame({"checkpoint": "c", "dataset": "d", "category": "x", "margin": [1.0, 3.0, -math.inf],
                          "reliance": [0.7, 0.9, 0.0], "prefers_context": [True, True, False]})
    with caplog.at_level("WARNING"):
        row = summarize_items(table, n_boot=20, add_all_category=False).iloc[0]
    assert row["n"] == 3 and row["n_nonfinite_margin"] == 1
    assert row["mean_margin"] == 2.0 and row["context_pref_rate"] == 1.0
    assert "1 of 3 items have a non-finite margin" in caplog.text
    clean = summarize_items(table.iloc[:2], n_boot=20, add_all_category=False)
    assert "n_nonfinite_margin" not in clean.columns


def test_scorer_fingerprint_names_version_and_alias_tables(monkeypatch, tmp_path):
    import shutil

    from fullscale import aliases, scoring

    fp = scoring.scorer_fingerprint()
    assert fp.startswith(scoring.SCORER_VERSION + "-") and fp == scoring.scorer_fingerprint()
    copy = tmp_path / "data"
    shutil.copytree(aliases.DATA, copy)
    with open(copy / "aliases.csv", "a", encoding="utf-8") as fh:
        fh.write("exonym,Xville,Yville\n")
    monkeypatch.setattr(aliases, "DATA", copy)
    assert scoring.scorer_fingerprint() != fp
