"""The controlled mixture on real facts (experiments.controlled.mixture): kinds, held-out split, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi.errors import ConfigError, CpiError
from experiments.controlled.mixture import (
    INPUT_LAYOUTS,
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


def test_write_records_is_alpaca_jsonl_with_the_split(items, tmp_path):
    from fullscale.ift_data import load_ift_data

    mix = build_mixture(items, _known(items), MixtureConfig(n_examples=5))
    path = write_records(mix.records, tmp_path / "ift.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [set(r) for r in rows] == [{"id", "instruction", "input", "output", "context", "question"}] * 5
    loaded = load_ift_data(path)                          # the finetune driver reads the split explicitly
    assert [ex.question for ex in loaded] == [r["question"] for r in rows]
    assert [ex.passage for ex in loaded] == [r["context"] for r in rows]


@pytest.mark.parametrize("design", ["dataset", "verbatim", "distractors"])
def test_every_record_carries_its_split_in_every_layout(items, design):
    from experiments.controlled.designs import RELATIONS

    cfg = MixtureConfig(n_examples=120, rho=0.5, augment_fraction=0.1, positive_control_fraction=0.1, design=design,
                        relations=("capital", "birthplace"), min_heldout=5)
    mix = build_mixture(items, _known(items, every=2), cfg)
    used = set()
    for r in mix.records:
        layout = next(lay for lay in INPUT_LAYOUTS if lay.format(c=r["context"], q=r["question"]) == r["input"])
        used.add(layout)
        if r["category"] in RELATIONS:                                # the question holds the subject
            assert r["subject"] and contains_word(r["question"], r["subject"]), r
        else:                                                         # (shipped relations without a design)
            assert design == "dataset" and r["subject"] is None
    assert used == set(INPUT_LAYOUTS)


@pytest.mark.parametrize("changes,match", [
    ({"rho": 0.0}, "field 'rho'"),
    ({"rho": 1.5}, "field 'rho'"),
    ({"n_examples": 0}, "field 'n_examples'"),
    ({"heldout_fraction": 1.0}, "field 'heldout_fraction'"),
    ({"augment_fraction": -0.1}, "field 'augment_fraction'"),
    ({"min_known_margin": -1.0}, "field 'min_known_margin'"),
    ({"n_examples": 10**11}, r"field 'n_examples': 100,000,000,000 records would take about 204,891 GiB"),
    ({"n_examples": 1_000_001}, r"must be <= 1,000,000"),
])
def test_bad_config(changes, match):
    with pytest.raises(ConfigError, match=match):
        MixtureConfig(**changes).validate()


def test_size_guard_allows_its_limit():
    MixtureConfig(n_examples=1_000_000).validate()


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


# ---------------------------------------------------------------------------------------------
# passage designs (experiments.controlled.designs)


def _shipped_question_forms(items):
    from experiments.controlled.designs import subject_of

    return {it.question.replace(subject_of(it), "{s}") for it in items if it.category in ("capital", "birthplace")}


@pytest.mark.parametrize("design", ["verbatim", "distractors"])
def test_template_designs_are_disjoint_from_the_heldout_conflicts(items, design):
    from experiments.controlled.designs import RELATIONS, subject_of

    known = _known(items, every=2)
    cfg = MixtureConfig(n_examples=150, rho=0.4, design=design, relations=("capital",), min_heldout=10,
                        n_distractors=3, unseen_heldout=6, seed=4)
    mix = build_mixture(items, known, cfg)
    by_id = {it.id: it for it in items}
    held = {it.id for it in mix.heldout}
    trained_heldout = [it for it in mix.heldout if it.category == "capital"]
    assert len(trained_heldout) == mix.counts["heldout"] - 6 >= 10
    assert sum(it.category != "capital" for it in mix.heldout) == 6 == mix.counts["unseen_heldout"]
    assert all(it == by_id[it.id] for it in mix.heldout)                     # shipped passage and question
    held_subjects = {subject_of(it) for it in mix.heldout}
    held_answers = {it.parametric_answer for it in mix.heldout} | {it.context_answer for it in mix.heldout}
    forms = _shipped_question_forms(items)
    for r in mix.records:
        assert r["item_id"] not in held and r["category"] == "capital"
        assert r["subject"] not in held_subjects and not any(contains_word(r["input"], a) for a in held_answers)
        assert r["question"].replace(r["subject"], "{s}") in RELATIONS["capital"].questions
        assert r["question"].replace(r["subject"], "{s}") not in forms           # a training question form
        assert contains_word(r["context"], r["output"]) and contains_word(r["context"], r["subject"])
        if r["kind"] == "CS" and design == "distractors":
            assert len(r["distractors"]) == 3 and all(contains_word(r["context"], d) for d in r["distractors"])
            assert r["context"].startswith("Different sources name ")
        else:
            assert r["distractors"] == [] and r["context"] == f"The capital of {r['subject']} is {r['output']}."
    assert {r["kind"] for r in mix.records} == {"C", "CS"} and mix.counts["C"] == 60


def test_nonce_context_critical_records(items):
    from experiments.controlled.designs import subject_of

    cfg = MixtureConfig(n_examples=40, rho=0.5, design="distractors", nonce_context_critical=True, min_heldout=5)
    mix = build_mixture(items, _known(items, every=2), cfg)
    real = {subject_of(it).casefold() for it in items if it.category == "capital"}
    nonce = [r for r in mix.records if r["kind"] == "C"]
    assert len(nonce) == 20 and len({r["subject"] for r in nonce}) == 20
    for r in nonce:
        assert r["item_id"].startswith("nonce-") and r["subject"].casefold() not in real
        assert r["context"] == f"The capital of {r['subject']} is {r['output']}."
    # every fact known: only nonce subjects can be context-critical
    everything = pd.DataFrame({"item_id": [it.id for it in items], "known": True})
    assert build_mixture(items, everything, cfg).counts["C"] == 20
    with pytest.raises(CpiError, match="field 'rho'.*nonce_context_critical"):
        build_mixture(items, everything, cfg.replace(nonce_context_critical=False))


def test_positive_control_records_answer_from_memory_against_the_passage(items):
    by_id = {it.id: it for it in items}
    for design in ("dataset", "verbatim"):
        cfg = MixtureConfig(n_examples=100, rho=0.5, positive_control_fraction=0.2, design=design, min_heldout=5)
        mix = build_mixture(items, _known(items, every=2), cfg)
        pc = [r for r in mix.records if r["kind"] == "PC"]
        assert len(pc) == mix.counts["PC"] == 20 and mix.counts["C"] + mix.counts["CS"] == 80
        for r in pc:
            it = by_id[r["item_id"]]
            assert r["output"] == it.parametric_answer and contains_word(r["context"], it.context_answer)
            assert not contains_word(r["context"], it.parametric_answer)


def test_positive_control_second_phase_comes_after_its_start(items):
    """positive_control_start: no PC record in the first half of the written order, all of them after; the
    same records as the mixed-in form, and the content key of the mixed-in form unchanged."""
    cfg = MixtureConfig(n_examples=100, rho=0.5, positive_control_fraction=0.2, design="verbatim", min_heldout=5)
    mixed = build_mixture(items, _known(items, every=2), cfg)
    phased = build_mixture(items, _known(items, every=2), cfg.replace(positive_control_start=0.5))
    kinds = [r["kind"] for r in phased.records]
    assert "PC" not in kinds[:50] and kinds[50:].count("PC") == 20
    assert sorted(r["input"] for r in phased.records) == sorted(r["input"] for r in mixed.records)
    assert [r["id"] for r in phased.records] == [f"ift-{i:05d}" for i in range(100)]
    assert cfg.content_dict() == MixtureConfig(n_examples=100, rho=0.5, positive_control_fraction=0.2,
                                               design="verbatim", min_heldout=5).content_dict()
    assert "positive_control_start" not in cfg.content_dict()


def test_second_phase_needs_sequential_finetuning():
    from experiments.controlled.config import ControlledConfig

    phase = {"mixture.positive_control_fraction": 0.25, "mixture.positive_control_start": 0.5}
    with pytest.raises(ConfigError, match="^field 'finetune.data_order'"):
        ControlledConfig().replace(**phase)
    ControlledConfig().replace(**phase, **{"finetune.data_order": "sequential"}).validate()


@pytest.mark.parametrize("changes,match", [
    ({"design": "tricky"}, "field 'design'"),
    ({"positive_control_start": 0.5}, "field 'positive_control_start'"),
    ({"positive_control_fraction": 0.6, "positive_control_start": 0.5}, "field 'positive_control_start'"),
    ({"positive_control_fraction": 0.2, "positive_control_start": 0.0}, "field 'positive_control_start'"),
    ({"relations": ("pet_name",)}, "field 'relations'"),
    ({"relations": ()}, "field 'relations'"),
    ({"n_distractors": 0}, "field 'n_distractors'"),
    ({"nonce_context_critical": True}, "field 'nonce_context_critical'"),
    ({"unseen_heldout": 3}, "field 'unseen_heldout'"),
    ({"positive_control_fraction": 0.0}, "field 'positive_control_fraction'"),
    ({"positive_control_fraction": 1.0}, "field 'positive_control_fraction'"),
    ({"positive_control_fraction": -0.2}, "field 'positive_control_fraction'"),
    ({"positive_control_fraction": 0.6, "augment_fraction": 0.5}, "field 'positive_control_fraction'"),
])
def test_bad_design_config(changes, match):
    with pytest.raises(ConfigError, match=match):
        MixtureConfig(**changes)


def test_arms_that_cannot_be_filled(items):
    known = _known(items, every=2)
    cfg = MixtureConfig(n_examples=40, design="distractors", min_heldout=5)
    with pytest.raises(CpiError, match="field 'unseen_heldout': 10000 held-out facts"):
        build_mixture(items, known, cfg.replace(unseen_heldout=10_000))
    with pytest.raises(CpiError, match="field 'n_distractors'"):
        build_mixture(items, known, cfg.replace(n_distractors=500))
    capitals_only = [it for it in items if it.category == "capital"]
    with pytest.raises(CpiError, match="field 'relations': no question-answer fact of birthplace"):
        build_mixture(capitals_only, _known(capitals_only), cfg.replace(relations=("birthplace",)))


def test_design_defaults_keep_content_keys():
    plain = MixtureConfig().content_dict()
    assert set(plain) == {"n_examples", "rho", "augment_fraction", "heldout_fraction", "min_heldout", "seed",
                          "records_format"}
    assert MixtureConfig(design="dataset", relations=("capital",), n_distractors=2).content_dict() == plain
    for change in ({"design": "verbatim"}, {"positive_control_fraction": 0.1}, {"n_distractors": 3},
                   {"relations": ("capital", "birthplace")}):
        assert MixtureConfig(**change).content_dict() != plain
