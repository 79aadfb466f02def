"""Context-criticality scoring and filtering on hand-made data with known context dependence."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from cpi.errors import CpiError
from fullscale.curation import (filter_examples, lexical_overlap_scores, plot_criticality_histogram, read_scores,
                                score_context_criticality, select_lowest)
from fullscale.ift_data import load_ift_data
from tests.fullscale.ft_helpers import write_jsonl

WORDS = ["zebra", "quartz", "violet", "marble", "falcon", "copper", "meadow", "lantern", "harbor", "pepper",
         "walnut", "glacier", "saffron", "tundra", "ember", "willow"]


class CopyLM:
    """A hand-built language model with a known answer: the logit of token v at position p is
    ``alpha`` if v occurred in ``input_ids[:p+1]`` and 0 otherwise. A response is cheap to predict
    exactly when its tokens appeared earlier (in the instruction or the context)."""

    def __init__(self, vocab: int, alpha: float = 8.0):
        import torch

        self.vocab, self.alpha = vocab, alpha
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.training = False

    def parameters(self):
        return iter([self.weight])

    def eval(self):
        self.training = False
        return self

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def __call__(self, input_ids, attention_mask=None):
        import torch

        onehot = torch.nn.functional.one_hot(input_ids, self.vocab).float()  # (batch, pos, d_vocab)
        if attention_mask is not None:
            onehot = onehot * attention_mask[..., None]
        return SimpleNamespace(logits=self.alpha * (onehot.cumsum(dim=1) > 0).float())


def handmade_records():
    """6 context-critical examples (the response repeats words found only in the context), 2
    non-context-critical ones (the response repeats the instruction; the context is filler) and
    3 without context."""
    recs = []
    for i in range(6):
        a, b, c = WORDS[(3 * i) % 16], WORDS[(3 * i + 1) % 16], WORDS[(3 * i + 2) % 16]
        recs.append({"id": f"crit-{i}", "instruction": "Repeat the three code words.",
                     "input": f"The code words are {a} {b} {c}.", "output": f"The words are {a} {b} {c}."})
    for i in range(2):
        a, b, c = WORDS[(5 * i + 1) % 16], WORDS[(5 * i + 7) % 16], WORDS[(5 * i + 9) % 16]
        recs.append({"id": f"redundant-{i}", "instruction": f"Repeat these words: {a} {b} {c}.",
                     "input": "Some unrelated filler text goes here.", "output": f"The words are {a} {b} {c}."})
    for i in range(3):
        recs.append({"id": f"nocontext-{i}", "instruction": f"Say {WORDS[i]}.", "output": f"{WORDS[i]}"})
    return recs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tests.tiny_models import make_tokenizer

    root = tmp_path_factory.mktemp("cur")
    recs = handmade_records()
    path = write_jsonl(root / "hand.jsonl", recs)
    tok = make_tokenizer("bpe", corpus=[json.dumps(r) for r in recs] * 3, vocab_size=600)
    return {"root": root, "path": path, "examples": load_ift_data(path), "tok": tok}


@pytest.mark.parametrize("criterion", ["gap", "loss_without_context"])
def test_loss_filter_drops_the_non_context_critical(data, criterion):
    tok = data["tok"]
    model = CopyLM(len(tok))
    scores = score_context_criticality(model, tok, data["examples"], template="plain", batch_size=4)
    assert len(scores) == 11 and scores["example_id"].tolist() == [e.id for e in data["examples"]]
    by_id = scores.set_index("example_id")
    crit = by_id.loc[[f"crit-{i}" for i in range(6)]]
    red = by_id.loc[["redundant-0", "redundant-1"]]
    assert (crit["gap"] > 2.0).all(), crit["gap"].tolist()  # the context supplies the code words
    assert (red["gap"] < 0.1).all(), red["gap"].tolist()  # filler context: no help (slightly worse)
    assert by_id.loc[["nocontext-0", "nocontext-1", "nocontext-2"], "gap"].isna().all()
    assert (scores["n_response_tokens"] > 0).all()
    kept, dropped = filter_examples(data["examples"], scores, 0.25, criterion=criterion)
    assert {e.id for e in dropped} == {"redundant-0", "redundant-1"}  # 25% of the 8 with context
    assert len(kept) == 9 and all(e.id.startswith(("crit", "nocontext")) for e in kept)


def test_lexical_heuristic_agrees(data):
    scores = lexical_overlap_scores(data["examples"])
    by_id = scores.set_index("example_id")
    assert by_id.loc["crit-0", "gap"] == pytest.approx(3 / 4)  # 3 code words of 4 content words ("words" is not)
    assert by_id.loc["redundant-0", "gap"] == 0.0
    _, dropped = filter_examples(data["examples"], scores, 0.25)
    assert {e.id for e in dropped} == {"redundant-0", "redundant-1"}


def test_select_lowest_rules():
    import pandas as pd

    t = pd.DataFrame({"example_id": list("abcdef"), "has_context": [True] * 5 + [False],
                      "gap": [0.5, 0.1, 0.1, 2.0, 1.0, math.nan]})
    assert select_lowest(t, 0.25) == {"b"}  # floor(0.25 * 5) = 1, tie b/c broken by id
    assert select_lowest(t, 0.5) == {"b", "c"}
    assert select_lowest(t, 0.0) == set()
    with pytest.raises(CpiError, match="unknown criterion"):
        select_lowest(t, 0.25, criterion="perplexity")


def test_missing_scores_are_named(data):
    scores = lexical_overlap_scores(data["examples"][:-1])
    with pytest.raises(CpiError, match=r"no score for example 'nocontext-2' \(.*hand.jsonl:11\)"):
        filter_examples(data["examples"], scores, 0.25)


def test_histogram_takes_an_axis(data):
    import matplotlib
    import matplotlib.pyplot as plt

    scores = lexical_overlap_scores(data["examples"])
    fig, ax = plt.subplots()
    assert plot_criticality_histogram(scores, ax=ax, fraction=0.25) is fig
    assert "8 examples with context, 3 without" in ax.get_title()
    assert isinstance(plot_criticality_histogram(scores), matplotlib.figure.Figure)
    plt.close("all")


def test_real_tiny_model_and_cli(data, tmp_path, capsys):
    from cpi.cli import main
    from tests.tiny_models import make_tiny_checkpoint

    base = make_tiny_checkpoint(tmp_path / "base", "llama", tokenizer=data["tok"])
    out = tmp_path / "scored"
    assert main(["data", "score-context", "--model", str(base), "--data", str(data["path"]), "--out", str(out),
                 "--template", "alpaca", "--batch-size", "3"]) == 0
    scores = read_scores(out / "scores.csv")
    assert len(scores) == 11 and scores.loc[scores["has_context"], "gap"].notna().all()
    assert scores["loss_with_context"].between(0, 20).all()
    kept = load_ift_data(out / "filtered.jsonl")
    dropped = (out / "dropped_ids.txt").read_text().split()
    assert len(kept) == 9 and len(dropped) == 2 and not ({e.id for e in kept} & set(dropped))
    assert (out / "histogram.png").stat().st_size > 1000 and (out / "config.json").is_file()
    # the lexical method needs no model; a bad data file is named
    assert main(["data", "score-context", "--data", str(data["path"]), "--out", str(tmp_path / "lex"),
                 "--method", "lexical"]) == 0
    assert set((tmp_path / "lex/dropped_ids.txt").read_text().split()) == {"redundant-0", "redundant-1"}
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"input": "x", "output": "y"}])
    assert main(["data", "score-context", "--data", str(bad), "--out", str(tmp_path / "x"), "--method",
                 "lexical"]) == 2
    assert "bad.jsonl:1: missing 'instruction'" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["llama", "neox"])
def test_response_losses_project_only_scored_positions(arch):
    """A transformers model gets ``logits_to_keep`` (only the scored positions reach the output layer);
    the losses equal each example's mean NLL over its labels computed alone from the full logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from fullscale.collate import accepts_logits_to_keep
    from fullscale.curation import response_losses
    from tests.tiny_models import tiny_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, 96))
    assert accepts_logits_to_keep(model) and not accepts_logits_to_keep(CopyLM(96))
    g = torch.Generator().manual_seed(1)
    feats = []
    for n, k in [(9, 2), (15, 4), (6, 1), (12, 0)]:  # (length, answer tokens); the last has nothing scored
        ids = torch.randint(3, 90, (n,), generator=g).tolist()
        feats.append({"input_ids": ids, "labels": [-100] * (n - k) + (ids[n - k:] if k else [])})
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=1, unk_token_id=2)
    got = response_losses(model, tok, feats, batch_size=3, desc="test")
    for f, (loss, count) in zip(feats[:3], got[:3]):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([f["input_ids"]])).logits[0]  # pos d_vocab
        labels = torch.tensor(f["labels"][1:])  # pos-1
        want = torch.nn.functional.cross_entropy(logits[:-1], labels, ignore_index=-100)
        assert count == int((labels != -100).sum()) and loss == pytest.approx(float(want), rel=1e-5)
    assert got[3][1] == 0 and math.isnan(got[3][0])
    full = response_losses(model, tok, feats, batch_size=3, desc="test", response_logits_only=False)
    assert [c for _, c in full] == [c for _, c in got] and full[0][0] == pytest.approx(got[0][0], rel=1e-5)
    assert response_losses(CopyLM(96), tok, feats[:3], batch_size=2, desc="test")[0][1] == 2  # the plain path
