"""Closed-book knowledge (fullscale.knowledge): candidates of the same relation and the rank of the true answer."""

from __future__ import annotations

import math

import pytest

from cpi.errors import CpiError
from fullscale.checkpoints import load_checkpoint
from fullscale.knowledge import candidate_answers, known_facts, known_rates
from fullscale.prompts import format_prompt
from fullscale.scoring import answer_sequence
from tests.fullscale.evalkit import item
from tests.tiny_models import make_tiny_checkpoint


def _items():
    caps = [("Germany", "Berlin"), ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Poland", "Warsaw")]
    out = [item(id=f"c{i}", category="capital", question=f"What is the capital of {c}?", parametric_answer=p,
                context=f"The capital of {c} is Lyon.", context_answer="Lyon") for i, (c, p) in enumerate(caps)]
    out.append(item(id="r1", category="river", question="Which river flows through Paris?",
                    parametric_answer="Seine", context="The Rhine flows through Paris.", context_answer="Rhine"))
    out.append(item(id="r2", category="river", question="Which river flows through Rome?",
                    parametric_answer="Tiber", parametric_aliases=("Tevere",), context="The Po flows through Rome.",
                    context_answer="Po"))
    return out


def test_candidates_are_the_same_relation_true_answer_first_and_seeded():
    items = _items()
    cands = candidate_answers(items, n_candidates=3, seed=1)
    assert cands == candidate_answers(items, n_candidates=3, seed=1)
    caps = {it.parametric_answer for it in items if it.category == "capital"}
    for it, c in zip(items, cands):
        assert c[0] == it.parametric_answer and it.parametric_answer not in c[1:]
        if it.category == "capital":
            assert len(c) == 3 and set(c) <= caps
        else:
            assert c[1:] == ["Tiber" if it.id == "r1" else "Seine"]  # only one other river exists
    with pytest.raises(CpiError, match="n_candidates must be >= 2"):
        candidate_answers(items, n_candidates=1)
    with pytest.raises(CpiError, match="item 'w1': no other answer of relation 'capital'"):
        candidate_answers([item()])


@pytest.mark.slow
def test_rank_equals_a_hand_computed_ranking(tmp_path):
    """Each candidate's score is logsumexp over its two surface forms of the summed answer log-probs."""
    import torch

    model, tok = load_checkpoint(make_tiny_checkpoint(tmp_path / "m", arch="llama", seed=3), device="cpu")
    items = _items()
    table = known_facts(model, tok, items, template="plain", n_candidates=4, batch_size=3, seed=0)
    cands = candidate_answers(items, n_candidates=4, seed=0)
    for (_, row), it, answers in zip(table.iterrows(), items, cands):
        fp = format_prompt(it, tok, "plain", with_context=False)
        scores = []
        for ans in answers:
            forms = []
            for form in (ans, " " + ans):
                seq = answer_sequence(tok, fp, form, add_special=True)
                with torch.no_grad():
                    logp = torch.log_softmax(model(input_ids=torch.tensor([seq.ids])).logits[0].double(), -1)
                forms.append(sum(float(logp[t - 1, seq.ids[t]]) for t in range(seq.start, len(seq.ids))))
            scores.append(math.log(sum(math.exp(f) for f in forms)))
        assert row["logp_true"] == pytest.approx(scores[0], abs=1e-4)
        assert row["rank"] == 1 + sum(s > scores[0] for s in scores[1:])
        assert row["known"] == (row["rank"] == 1)
        assert row["best_other"] == answers[1 + max(range(len(answers) - 1), key=lambda c: scores[1 + c])]
    rates = known_rates(table, n_boot=100)
    allrow = rates[rates["category"] == "ALL"].iloc[0]
    assert allrow["n"] == len(items) and allrow["known_rate"] == pytest.approx(table["known"].mean())
    assert allrow["known_rate_lo"] <= allrow["known_rate"] <= allrow["known_rate_hi"]
    cap = rates[rates["category"] == "capital"].iloc[0]
    assert cap["chance"] == pytest.approx(0.25)


def test_a_bf16_forward_agrees_with_float32_within_its_rounding(tmp_path, bf16_allowed):
    """The knowledge stage in bf16: log-probs come from the logits in float32 whatever the model's dtype, so
    a bf16 model differs from the float32 one only by its rounding; ranks agree where the margin exceeds it."""
    ck = make_tiny_checkpoint(tmp_path / "m", arch="llama", seed=3)
    items = _items()
    tables = {}
    for dt in ("float32", "bfloat16"):
        model, tok = load_checkpoint(ck, device="cpu", dtype=dt)
        assert next(model.parameters()).dtype.is_floating_point and str(next(model.parameters()).dtype).endswith(dt)
        tables[dt] = known_facts(model, tok, items, template="plain", n_candidates=4, batch_size=3, seed=0)
    a, b = tables["float32"], tables["bfloat16"]
    assert list(a["item_id"]) == list(b["item_id"])
    diff = (a["logp_true"] - b["logp_true"]).abs()
    assert 0 < diff.max() < 0.05, diff.tolist()  # it ran in bf16, within bf16's rounding (measured: 0.002)
    margin = a["logp_true"] - a["logp_best_other"]
    sure = margin.abs() > 2 * diff.max()
    assert sure.sum() >= len(items) - 1 and (a["known"][sure] == b["known"][sure]).all()
