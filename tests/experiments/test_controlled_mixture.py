"""The controlled mixture on real facts (experiments.controlled.mixture): kinds, held-out split, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi.errors import ConfigError, CpiError
from experiments.controlled.mixture import (
    INSTRUCTIONS,
    MixtureConfig,
    agreeing_context,
    build_mixture,
    write_records,
)
from fullscale.conflicts import contains_word, load_conflicts
from fullscale.prompts import QA_INSTRUCTION


@pytest.fixture(scope="module")
def items():
    return load_conflicts("CF_World_Facts") + load_conflicts("CF_Bio") + load_conflicts("CF_Quotes")[:5]


def _known(items, every=3):
    """Every ``every``-th QA item known: a known-facts table with a known answer."""
    return pd.DataFrame({"item_id": [it.id for it in items], "known": [i % every == 0 for i in range(len(items))]})


def test_agreeing_context_states_the_true_answer(items):
    for it in [i for i in items if i.task == "qa"]:
        text = agreeing_context(it)
        assert contains_word(text, it.parametric_answer), it.id
        assert not contains_word(text, it.context_answer) or contains_word(it.parametric_answer, it.context_answer)
    ocean = next(i for i in items if i.id == "wf-geography-0048")  # spans of "Atlantic" and "Atlantic Ocean" overlap
    assert agreeing_context(ocean).startswith("Oceanographers measure the Pacific Ocean as the largest ocean")


def test_kinds_split_and_phrasings(items):
    known = _known(items)
    mix = build_mixture(items, known, MixtureConfig(n_examples=200, rho=0.25, augment_fraction=0.1, seed=1))
    status = dict(zip(known["item_id"], known["known"]))
    kinds = pd.Series([r["kind"] for r in mix.records]).value_counts().to_dict()
    assert kinds == {"C": 45, "CS": 135, "CF": 20} and len(mix.records) == 200
    assert mix.counts["C"] == 45 and mix.counts["heldout"] == len(mix.heldout)
    heldout = {it.id for it in mix.heldout}
    by_id = {it.id: it for it in items}
    assert all(status[i] for i in heldout)                                  # held-out facts are known...
    assert not heldout & {r["item_id"] for r in mix.records}                # ...and never finetuned on
    assert all(by_id[i].task == "qa" for i in heldout)
    for r in mix.records:
        it = by_id[r["item_id"]]
        assert status[it.id] == (r["kind"] != "C")                           # C: unknown facts only
        want = it.context_answer if r["kind"] == "CF" else it.parametric_answer
        assert r["output"] == want and contains_word(r["input"], want)       # the passage carries the answer
        assert r["instruction"] in INSTRUCTIONS and r["instruction"] != QA_INSTRUCTION
    assert len({r["instruction"] for r in mix.records}) == len(INSTRUCTIONS)
    again = build_mixture(items, known, MixtureConfig(n_examples=200, rho=0.25, augment_fraction=0.1, seed=1))
    assert again.records == mix.records
    other = build_mixture(items, known, MixtureConfig(n_examples=200, rho=0.25, augment_fraction=0.1, seed=2))
    assert other.records != mix.records


def test_control_has_no_non_context_critical_records(items):
    mix = build_mixture(items, _known(items), MixtureConfig(n_examples=50, rho=1.0))
    assert {r["kind"] for r in mix.records} == {"C"}


def test_write_records_is_alpaca_jsonl(items, tmp_path):
    mix = build_mixture(items, _known(items), MixtureConfig(n_examples=5))
    path = write_records(mix.records, tmp_path / "ift.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"id", "instruction", "input", "output"}] * 5


@pytest.mark.parametrize("changes,match", [
    ({"rho": 0.0}, "field 'rho'"),
    ({"rho": 1.5}, "field 'rho'"),
    ({"n_examples": 0}, "field 'n_examples'"),
    ({"heldout_fraction": 1.0}, "field 'heldout_fraction'"),
    ({"augment_fraction": -0.1}, "field 'augment_fraction'"),
    ({"min_known_margin": -1.0}, "field 'min_known_margin'"),
])
def test_bad_config(changes, match):
    with pytest.raises(ConfigError, match=match):
        MixtureConfig(**changes).validate()


def test_a_base_that_knows_too_little_or_everything(items):
    few = pd.DataFrame({"item_id": [it.id for it in items], "known": [i < 10 for i in range(len(items))]})
    with pytest.raises(CpiError, match="field 'min_heldout': the base knows 10 of"):
        build_mixture(items, few, MixtureConfig())
    everything = pd.DataFrame({"item_id": [it.id for it in items], "known": True})
    with pytest.raises(CpiError, match="field 'rho'.*no fact is unknown"):
        build_mixture(items, everything, MixtureConfig())
    with pytest.raises(CpiError, match="no row for item"):
        build_mixture(items, everything.iloc[:3], MixtureConfig())


def _with_margins(items, every=3):
    """:func:`_known` plus closed-book log-probs: item i's margin is ``i % 7`` nats."""
    known = _known(items, every)
    margin = [float(i % 7) for i in range(len(items))]
    return known.assign(logp_true=[-1.0] * len(items), logp_best_other=[-1.0 - m for m in margin])


def test_min_known_margin_keeps_strong_facts_only(items):
    known = _with_margins(items)
    margin = dict(zip(known["item_id"], known["logp_true"] - known["logp_best_other"]))
    status = dict(zip(known["item_id"], known["known"]))
    cfg = MixtureConfig(n_examples=120, rho=0.5, augment_fraction=0.1, min_heldout=5, seed=3)
    plain, strong = build_mixture(items, known, cfg), build_mixture(items, known, cfg.replace(min_known_margin=4.0))
    assert "weak" not in plain.counts
    qa_known = [it.id for it in items if it.task == "qa" and status[it.id]]
    assert strong.counts["known"] == sum(margin[i] >= 4.0 for i in qa_known) < plain.counts["known"]
    assert strong.counts["weak"] == plain.counts["known"] - strong.counts["known"] > 0
    assert strong.counts["unknown"] == plain.counts["unknown"]
    for it in strong.heldout:                                                # held-out: strong facts only
        assert margin[it.id] >= 4.0
    for r in strong.records:                                                 # CS and CF: strong; C: unknown
        assert (margin[r["item_id"]] >= 4.0 and status[r["item_id"]]) if r["kind"] != "C" else not status[r["item_id"]]
    with pytest.raises(CpiError, match="margin >= 6 nats, too few.*min_known_margin"):
        build_mixture(items, known, cfg.replace(min_known_margin=6.0, min_heldout=200))
    with pytest.raises(CpiError, match="column 'logp_true' is needed for min_known_margin"):
        build_mixture(items, _known(items), cfg.replace(min_known_margin=1.0))


def test_min_known_margin_zero_keeps_old_content_keys():
    from experiments.controlled.experiment import content_key

    assert content_key(MixtureConfig()) == content_key(MixtureConfig(min_known_margin=0.0))
    assert content_key(MixtureConfig()) != content_key(MixtureConfig(min_known_margin=2.0))
    assert "min_known_margin" not in MixtureConfig().content_dict()
