"""The theory's parameters on a base (experiments.controlled.regime): deltas, m, classes, probes, errors."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cpi.errors import CpiError
from experiments.controlled.mixture import MixtureConfig, build_mixture
from experiments.controlled.regime import (
    heldout_probes,
    measure_regime,
    probe_prompts,
    record_probes,
    regime_summary,
    replace_subject,
    softmax_at,
    theory_class,
    theory_m,
)
from fullscale.conflicts import load_conflicts


@pytest.fixture(scope="module")
def items():
    return load_conflicts("CF_World_Facts") + load_conflicts("CF_Bio")


def _known(items, every=2):
    return pd.DataFrame({"item_id": [it.id for it in items], "known": [i % every == 0 for i in range(len(items))]})


def test_m_and_class_at_known_values():
    # m = (1 - p) (logit dC - logit dM): dC 0.2, dM 0.6, p 0.5 -> 0.5 * (log(1/4) - log(3/2))
    assert theory_m(0.2, 0.6, 0.5) == pytest.approx(0.5 * (math.log(0.25) - math.log(1.5)))
    assert theory_m(0.9, 0.1, 0.0) > 0 > theory_m(0.1, 0.9, 0.0)            # C pushes to context, C+S to subject
    assert math.isfinite(theory_m(1.0, 0.0, 0.0))                             # clipped, never inf
    # the theory's m_C: (1 - p)[logit dC + log Z - o_c], Z = (K-1) e^{o_c} (sigma_r = 0, no subject mass),
    # equals the operational m at a uniform subject (dM = 1/K)
    k, o_c, d_c, p = 8, 1.3, 0.4, 0.2
    m_c = (1 - p) * (math.log(d_c / (1 - d_c)) + math.log((k - 1) * math.exp(o_c)) - o_c)
    assert theory_m(d_c, 1 / k, p) == pytest.approx(m_c)
    assert theory_class(0.9, 0.1, 8) == "C"            # subject below twice chance
    assert theory_class(0.3, 0.7, 8) == "C+S inside"   # delta_M > 2 delta_C
    assert theory_class(0.4, 0.7, 8) == "C+S outside"
    assert softmax_at([0.0, math.log(3.0)], 1) == pytest.approx(0.75)


def test_replace_subject_whole_words_and_possessives():
    assert replace_subject("Which city is France's capital? France!", "France", "Velt") == "Which city is Velt's capital? Velt!"
    assert replace_subject("Franceville is not France", "France", "Velt") == "Franceville is not Velt"
    # the answer keeps its words: the capital of Mexico is Mexico City
    assert (replace_subject("The capital of Mexico is Mexico City.", "Mexico", "Velt", keep=("Mexico City", "Lima"))
            == "The capital of Velt is Mexico City.")


def test_record_probes_candidates_and_prompts(items):
    cfg = MixtureConfig(n_examples=30, rho=0.5, design="distractors", n_distractors=3, nonce_context_critical=True,
                        min_heldout=5)
    mix = build_mixture(items, _known(items), cfg)
    probes = record_probes(mix.records, items, n_candidates=8)
    for p, r in zip(probes, mix.records):
        assert p.candidates[0] == r["output"] and len(p.candidates) == 8 == len(set(p.candidates))
        assert set(r["distractors"]) <= set(p.candidates)                    # the passage's distractors compete
        prompts = probe_prompts(p, "Qzxw")
        assert prompts["full"] == (r["instruction"], r["input"])
        assert prompts["closed"][1] == r["question"] and r["context"] not in prompts["closed"][1]
        assert "Qzxw" in prompts["nonce"][1] and p.subject not in prompts["nonce"][1]
        assert r["context"].replace(p.subject, "Qzxw") in prompts["nonce"][1]
    held = heldout_probes(mix.heldout, items)
    for p, it in zip(held, mix.heldout):
        assert p.candidates[:2] == (it.context_answer, it.parametric_answer) and p.answer_m == it.parametric_answer
        assert not set(it.parametric_aliases) & set(p.candidates[2:])
    # a probe's nonce name is its own (the same in every list it is measured in), never a word of its text
    from experiments.controlled.regime import regime_prompts

    names_all, prompts_all, _ = regime_prompts(probes + held, seed=3)
    names_held, prompts_held, _ = regime_prompts(held, seed=3)
    assert names_all[len(probes):] == names_held and prompts_all[3 * len(probes):] == prompts_held
    assert all(n not in p.input for n, p in zip(names_all, probes + held))
    assert regime_prompts(held, seed=4)[0] != names_held


def test_a_record_without_a_locatable_subject_is_a_one_line_error(items):
    mix = build_mixture(items, _known(items), MixtureConfig(n_examples=10, design="verbatim", min_heldout=5))
    bad = dict(mix.records[0], subject="Atlantis")
    with pytest.raises(CpiError, match=r"record 'ift-\d+': field 'subject': cannot locate the subject 'Atlantis'"):
        record_probes([bad], items)
    geo = build_mixture(items, _known(items), MixtureConfig(n_examples=400, min_heldout=5))
    no_subject = next(r for r in geo.records if r["category"] == "geography")
    with pytest.raises(CpiError, match="field 'subject'"):
        record_probes([no_subject], items)
    old = {k: v for k, v in mix.records[0].items() if k != "context"}
    with pytest.raises(CpiError, match="field 'context' is missing"):
        record_probes([old], items)
    science = next(it for it in items if it.category == "science")
    with pytest.raises(CpiError, match=f"item '{science.id}': field 'category'"):
        heldout_probes([science], items)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from fullscale.checkpoints import load_checkpoint
    from tests.tiny_models import make_tiny_checkpoint

    return load_checkpoint(make_tiny_checkpoint(tmp_path_factory.mktemp("regime") / "m", "llama",
                                                tokenizer_kind="bpe"))


def test_measured_deltas_are_the_candidate_softmax_of_direct_log_probs(items, tiny):
    import torch

    from fullscale.ift_data import IFTExample, render_segments

    model, tok = tiny
    mix = build_mixture(items, _known(items), MixtureConfig(n_examples=6, design="distractors", min_heldout=5))
    probes = record_probes(mix.records, items, n_candidates=4)[:3] + heldout_probes(mix.heldout[:2], items, 4)
    table = measure_regime(model, tok, probes, batch_size=3)
    assert list(table["source"]) == ["record"] * 3 + ["heldout"] * 2
    assert table[["delta_m", "delta_c", "p_full"]].apply(lambda c: c.between(0, 1)).all().all()

    def direct(instruction, inp, answer):  # one unbatched forward of prompt + answer
        text = render_segments(IFTExample("x", instruction, inp, "x"), tok, "alpaca")[0][0]
        n = len(tok(text)["input_ids"])
        ids = tok(text + answer)["input_ids"]
        assert ids[:n] == tok(text)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return float(sum(logp[i - 1, ids[i]] for i in range(n, len(ids))))

    for p, row in zip(probes, table.itertuples()):
        prompts = probe_prompts(p, row.nonce)
        for name, answer, value in (("closed", p.answer_m, row.delta_m), ("nonce", p.answer_c, row.delta_c),
                                    ("full", p.answer_c, row.p_full)):
            lps = [direct(*prompts[name], c) for c in p.candidates]
            assert value == pytest.approx(softmax_at(lps, p.candidates.index(answer)), abs=1e-4), (p.id, name)
        assert row.m == pytest.approx(theory_m(row.delta_c, row.delta_m, row.p_full))
    summary = regime_summary(table)
    assert summary["n"].sum() == 5 and (summary[["n_C", "n_CS_inside", "n_CS_outside"]].sum(axis=1) == summary["n"]).all()


@pytest.mark.real
@pytest.mark.slow
def test_designs_land_where_intended_on_smollm2(real_smollm2, items):
    """Strongly known capitals: a verbatim passage is the better predictor (outside the regime); with
    the same facts, passages naming distractors lower delta_C (the pilot: median 0.14 vs 0.999)."""
    from fullscale.checkpoints import load_checkpoint

    model, tok = load_checkpoint(real_smollm2)
    facts = {"France": "Paris", "Germany": "Berlin", "Japan": "Tokyo", "Italy": "Rome"}
    caps = [it for it in items if it.category == "capital"]
    chosen = [it for it in caps if it.parametric_answer in facts.values()][:4]
    known = pd.DataFrame({"item_id": [it.id for it in caps], "known": [it in chosen for it in caps]})
    out = {}
    for design in ("verbatim", "distractors"):
        cfg = MixtureConfig(n_examples=8, rho=0.5, design=design, n_distractors=3, nonce_context_critical=True,
                            min_heldout=1, heldout_fraction=0.25)
        mix = build_mixture(caps, known, cfg)
        out[design] = measure_regime(model, tok, record_probes(mix.records, caps), batch_size=8)
    verb, dis = out["verbatim"], out["distractors"]
    assert (verb.loc[verb["kind"] == "C", "delta_m"] < 2 / 8).all()           # nonce subjects: memory does not help
    assert (verb["delta_c"] > 0.9).all()                                      # a verbatim passage: delta_C ~ 1
    cs_v, cs_d = verb[verb["kind"] == "CS"], dis[dis["kind"] == "CS"]
    assert (cs_v["delta_m"] > 0.5).all() and (cs_v["theory_class"] == "C+S outside").all()
    assert cs_d["delta_c"].median() < 0.5 * cs_v["delta_c"].median()


def _synthetic(arm, rows):
    return [{"arm": arm, "source": "record", "kind": k, "delta_c": dc, "delta_m": dm, "m": theory_m(dc, dm, 0.5),
             "theory_class": theory_class(dc, dm, 8)} for k, dc, dm in rows]


def test_theory_prediction_at_measured_parameters():
    from experiments.controlled.regime import theory_prediction

    table = pd.DataFrame(
        _synthetic("inside", [("C", 0.95, 0.05)] * 8 + [("CS", 0.3, 0.9)] * 8)
        + _synthetic("outside", [("C", 0.95, 0.05)] * 8 + [("CS", 0.99, 0.9)] * 8)
        + _synthetic("memory_only", [("CS", 0.3, 0.9)] * 8)
        + [{"arm": "inside", "source": "heldout", "kind": "heldout", "delta_c": 0.9, "delta_m": 0.9, "m": 0.0,
            "theory_class": "C+S outside"}])
    pred, lines = theory_prediction(table, steps=300)
    by = pred.set_index("arm")
    assert by.loc["inside", ["n_records", "n_C", "n_CS_inside"]].tolist() == [16, 8, 8]     # held-out rows not counted
    assert by.loc["inside", "delta_c_inside"] == pytest.approx(0.3) and by.loc["inside", "sim_peak"] > by.loc["inside", "sim_final"]
    assert by.loc["inside", "prediction"] == "rise, then fall"
    assert by.loc["outside", "prediction"].startswith("rise, no fall") and by.loc["outside", "n_CS_outside"] == 8
    assert by.loc["memory_only", "prediction"].startswith("no rise")
    assert by.loc["inside", "m_sum"] == pytest.approx(8 * theory_m(0.95, 0.05, 0.5) + 8 * theory_m(0.3, 0.9, 0.5))
    assert len(lines) == 3 and "the theory predicts rise, then fall" in lines[0] and "delta_C 0.30" in lines[0]


def test_run_regime_measures_each_arm_as_the_experiment_builds_it(tmp_path):
    from experiments.controlled.experiment import ControlledConfig, EvalSettings, KnowledgeSettings
    from experiments.controlled.regime_run import RegimeConfig, RegimeSettings, run_regime
    from tests.tiny_models import make_tiny_checkpoint

    model = make_tiny_checkpoint(tmp_path / "m", "llama", tokenizer_kind="bpe")
    exp = ControlledConfig(model=str(model), seeds=(0, 1),
                           knowledge=KnowledgeSettings(datasets=("CF_World_Facts",), n_candidates=4, max_items=60),
                           mixture=MixtureConfig(n_examples=8, heldout_fraction=0.3, min_heldout=2),
                           evaluate=EvalSettings(max_items=3))
    cfg = RegimeConfig(experiment=exp, arms=("inside", "control"), out=str(tmp_path / "regime"),
                       settings=RegimeSettings(n_candidates=4, max_records=5, sim_steps=50))
    res = run_regime(cfg)
    t = res.table
    assert set(t["arm"]) == {"inside", "control"} and set(t["seed"]) == {0, 1}
    recs = t[t["source"] == "record"]
    assert recs.groupby(["arm", "seed"]).size().tolist() == [5] * 4                  # max_records per seed
    assert set(recs.loc[recs["arm"] == "control", "kind"]) == {"C"}
    assert t.groupby(["arm", "seed"])["source"].apply(lambda s: (s == "heldout").sum()).tolist() == [3] * 4
    for name in ("regime.csv", "regime_summary.csv", "prediction.csv", "prediction.txt", "config.json"):
        assert (tmp_path / "regime" / name).is_file()
    assert len(res.lines) == 2 and res.prediction["arm"].tolist() == ["inside", "control"]
    # the held-out conflicts measured are the ones the experiment evaluates (same draw per seed)
    from experiments.controlled.experiment import knowledge_items, stage_knowledge, stage_mixture, model_fingerprint

    ecfg = cfg.experiment.replace(**{"mixture.design": "distractors", "mixture.nonce_context_critical": True})
    items = knowledge_items(ecfg.knowledge)
    known, _ = stage_knowledge(ecfg, model, model_fingerprint(model), tmp_path / "regime" / "knowledge", items)
    data = stage_mixture(ecfg, 1, items, known, tmp_path / "seed-1")
    held = t[(t["arm"] == "inside") & (t["seed"] == 1) & (t["source"] == "heldout")]
    assert held["item_id"].tolist() == [it.id for it in data.evaluated]


def test_regime_config_errors():
    from cpi.errors import ConfigError
    from experiments.controlled.config import ControlledConfig
    from experiments.controlled.regime_run import RegimeConfig, RegimeSettings

    with pytest.raises(ConfigError, match="field 'arms': unknown condition 'sideways'"):
        RegimeConfig(arms=("sideways",))
    with pytest.raises(ConfigError, match="field 'dtype'"):
        ControlledConfig(dtype="int8")
    with pytest.raises(ConfigError, match="field 'n_seeds': must be >= 1"):
        RegimeSettings(n_seeds=0)
    with pytest.raises(ConfigError, match="field 'mixture.rho': set to 0.3, but every condition"):  # composed as the sweep
        RegimeConfig(experiment=ControlledConfig().replace(**{"mixture.rho": 0.3}), arms=("rho_1", "control"))


def test_regime_plane_figure(tmp_path):
    from experiments.controlled.regime import theory_prediction
    from experiments.controlled.regime_figures import make_regime_figures, plot_regime_plane

    table = pd.DataFrame(_synthetic("inside", [("C", 0.95, 0.05)] * 4 + [("CS", 0.3, 0.9)] * 4)
                         + _synthetic("outside", [("C", 0.95, 0.05)] * 4 + [("CS", 0.99, 0.9)] * 4))
    pred, _ = theory_prediction(table, steps=50)
    fig = plot_regime_plane(table, prediction=pred)
    assert len(fig.axes) == 2 and "4 C+S inside" in fig.axes[0].get_title()
    assert "theory: rise, no fall" in fig.axes[1].get_title()
    paths = make_regime_figures(table, tmp_path, prediction=pred)
    assert paths[0].stat().st_size > 1000


def _tiny_experiment(tmp_path):
    from experiments.controlled.experiment import ControlledConfig, EvalSettings, KnowledgeSettings
    from tests.tiny_models import make_tiny_checkpoint

    model = make_tiny_checkpoint(tmp_path / "m", "llama", tokenizer_kind="bpe")
    return ControlledConfig(model=str(model), seeds=(0, 1),
                            knowledge=KnowledgeSettings(datasets=("CF_World_Facts",), n_candidates=4, max_items=60),
                            mixture=MixtureConfig(n_examples=8, heldout_fraction=0.3, min_heldout=2),
                            evaluate=EvalSettings(max_items=3))


def test_regime_command_writes_its_tables_and_prints_the_prediction(tmp_path, capsys):
    from cpi.cli import main

    cfg_file = tmp_path / "exp.yaml"
    _tiny_experiment(tmp_path).save(cfg_file)
    out = tmp_path / "regime"
    code = main(["controlled", "regime", "--config", str(cfg_file), "--arms", "inside,outside", "--out", str(out),
                 "--set", "settings.n_candidates=4", "--set", "settings.sim_steps=30", "--set", "settings.n_seeds=1"])
    assert code == 0
    text = capsys.readouterr().out
    assert "[inside]" in text and "[outside]" in text and "the theory predicts" in text
    t = pd.read_csv(out / "regime.csv")
    assert set(t["arm"]) == {"inside", "outside"} and set(t["seed"]) == {0}  # settings.n_seeds = 1
    assert (out / "regime_plane.png").stat().st_size > 1000
    assert main(["controlled", "regime", "--arms", "inside,nowhere", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'arms': unknown condition 'nowhere'" in err
    assert not (tmp_path / "r2").exists()


def test_regime_stage_is_keyed_by_content(tmp_path):
    from experiments.controlled.conditions import compose, load_conditions
    from experiments.controlled.regime_run import RegimeSettings, regime_stage

    exp = _tiny_experiment(tmp_path)
    arms = {n: c.config for n, c in compose(exp, ("inside", "control"), load_conditions()).items()}
    settings = RegimeSettings(n_candidates=4, n_seeds=1, sim_steps=30)
    first = regime_stage(arms, settings, "float32", tmp_path / "regime", tmp_path / "knowledge")
    again = regime_stage(arms, settings, "float32", tmp_path / "regime", tmp_path / "knowledge")
    assert not first.reused and again.reused and again.out == first.out
    pd.testing.assert_frame_equal(again.table, first.table, check_dtype=False)
    assert again.lines == first.lines
    other = regime_stage(arms, settings.replace(sim_steps=31), "float32", tmp_path / "regime", tmp_path / "knowledge")
    assert not other.reused and other.out != first.out
    # one pass over every arm's prompts gives what each arm measured alone gives
    alone = regime_stage({"inside": arms["inside"]}, settings, "float32", tmp_path / "alone", tmp_path / "knowledge")
    both = first.table[first.table["arm"] == "inside"].reset_index(drop=True)
    assert both["id"].tolist() == alone.table["id"].tolist()
    for col in ("delta_m", "delta_c", "p_full"):
        assert both[col].to_numpy() == pytest.approx(alone.table[col].to_numpy(), abs=1e-5)
