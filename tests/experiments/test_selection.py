"""Records selected by their measured regime parameters (experiments.controlled.selection, mixture.delta_c_band)."""

from __future__ import annotations

import pandas as pd
import pytest

from cpi.errors import ConfigError, CpiError
from experiments.controlled.mixture import MixtureConfig, build_mixture
from experiments.controlled.selection import SELECTION_NONCE_OFFSET, BandSelector, in_band
from fullscale.conflicts import load_conflicts


@pytest.fixture(scope="module")
def items():
    return load_conflicts("CF_World_Facts") + load_conflicts("CF_Bio")


def _known(items, every=2):
    return pd.DataFrame({"item_id": [it.id for it in items], "known": [i % every == 0 for i in range(len(items))]})


BAND = MixtureConfig(n_examples=20, rho=0.25, design="distractors", nonce_context_critical=True, min_heldout=5,
                     delta_c_band=(0.2, 0.45), band_pool=4)


def test_in_band_needs_the_band_and_the_regime():
    t = pd.DataFrame({"delta_c": [0.1, 0.2, 0.3, 0.45, 0.46, 0.3], "delta_m": [0.9, 0.9, 0.9, 0.95, 0.99, 0.5]})
    assert in_band(t, (0.2, 0.45)).tolist() == [False, True, True, True, False, False]  # last: delta_M < 2 delta_C


def test_band_mixture_keeps_the_first_selected_candidates_in_order(items):
    seen = []

    def every_third(pool):
        seen.append(list(pool))
        return [i % 3 == 0 for i in range(len(pool))]

    mix = build_mixture(items, _known(items), BAND, every_third)
    (pool,) = seen
    assert len(pool) == 15 * 4 and {r["kind"] for r in pool} == {"CS"}     # n_CS x band_pool candidates
    cs = [r for r in mix.records if r["kind"] == "CS"]
    assert mix.counts["CS"] == 15 and mix.counts["C"] == 5
    key = ("input", "output", "item_id")
    assert sorted(tuple(r[k] for k in key) for r in cs) == sorted(tuple(r[k] for k in key) for r in pool[0:45:3])
    assert len({r["input"] for r in pool}) > len({r["item_id"] for r in pool})  # a fact's candidates differ
    assert [r for r in mix.records if r["kind"] == "C"] == [r for r in build_mixture(
        items, _known(items), BAND, every_third).records if r["kind"] == "C"]   # deterministic in the seed


def test_band_mixture_errors(items):
    with pytest.raises(CpiError, match=r"field 'delta_c_band': 2 of 60 candidate records have delta_C in \[0.2, 0.45\]"
                                       r".* 15 needed"):
        build_mixture(items, _known(items), BAND, lambda pool: [i < 2 for i in range(len(pool))])
    with pytest.raises(CpiError, match="field 'delta_c_band': selecting records .* needs the base model"):
        build_mixture(items, _known(items), BAND)
    build_mixture(items, _known(items), BAND.replace(rho=1.0))  # no non-context-critical record: nothing to select


@pytest.mark.parametrize("changes,match", [
    ({"delta_c_band": (0.5, 0.2)}, "field 'delta_c_band': give"),
    ({"delta_c_band": (0.2, 0.3, 0.4)}, "field 'delta_c_band': give"),
    ({"delta_c_band": (-0.1, 0.3)}, "field 'delta_c_band': give"),
    ({"delta_c_band": (0.2, 0.45), "design": "verbatim"}, "field 'delta_c_band': selects among distractor"),
    ({"band_pool": 0}, "field 'band_pool'"),
])
def test_bad_band_config(changes, match):
    with pytest.raises(ConfigError, match=match):
        BAND.replace(**changes)


def test_band_defaults_keep_content_keys():
    plain = MixtureConfig(design="distractors").content_dict()
    assert "delta_c_band" not in plain and "band_pool" not in plain
    assert BAND.content_dict()["delta_c_band"] == [0.2, 0.45]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.tiny_models import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("selection") / "m", "llama", tokenizer_kind="bpe")


def test_band_selector_measures_with_its_own_names_and_caches(items, tiny, tmp_path):
    from experiments.controlled.keys import model_fingerprint
    from experiments.controlled.regime import measure_regime, record_probes
    from fullscale.checkpoints import load_checkpoint

    pool = build_mixture(items, _known(items), BAND.replace(delta_c_band=None)).records[:6]
    sel = BandSelector(tiny, model_fingerprint(tiny), "float32", items, (0.0, 0.5), seed=3, cache=tmp_path / "cache",
                       n_candidates=4)
    keep = sel(pool)
    table = sel.table
    assert keep == in_band(table, (0.0, 0.5)).tolist() and table["selected"].tolist() == keep
    model, tok = load_checkpoint(tiny)
    probes = record_probes([{**r, "id": f"candidate-{i:05d}"} for i, r in enumerate(pool)], items, 4)
    direct = measure_regime(model, tok, probes, seed=SELECTION_NONCE_OFFSET + 3)
    assert table["delta_c"].to_numpy() == pytest.approx(direct["delta_c"].to_numpy(), abs=1e-6)
    regime_names = measure_regime(model, tok, probes, seed=3)["nonce"]      # the regime stage's draw
    assert (table["nonce"] != regime_names).all()                           # selection and report: other names
    cached = list((tmp_path / "cache" / "selection").glob("*.csv"))
    assert len(cached) == 1
    again = BandSelector(tiny, "another fingerprint", "float32", items, (0.0, 0.5), seed=3, cache=tmp_path / "cache",
                         n_candidates=4)
    again(pool)
    assert len(list((tmp_path / "cache" / "selection").glob("*.csv"))) == 2  # another base: measured afresh
    same = BandSelector(tiny, model_fingerprint(tiny), "float32", items, (0.2, 0.3), seed=3, cache=tmp_path / "cache",
                        n_candidates=4)
    assert same(pool) == in_band(table, (0.2, 0.3)).tolist()                # read back, another band applied
    assert len(list((tmp_path / "cache" / "selection").glob("*.csv"))) == 2


def _band_experiment(model, tmp_path, band):
    from experiments.controlled.experiment import ControlledConfig, EvalSettings, KnowledgeSettings

    return ControlledConfig(model=str(model), seeds=(0,),
                            knowledge=KnowledgeSettings(datasets=("CF_World_Facts",), n_candidates=4, max_items=60),
                            mixture=MixtureConfig(n_examples=8, heldout_fraction=0.3, min_heldout=2, design="distractors",
                                                  nonce_context_critical=True, delta_c_band=band, band_pool=6),
                            evaluate=EvalSettings(max_items=3), knowledge_cache=str(tmp_path / "knowledge"),
                            dtype="float32")


def _stage_inputs(cfg, tmp_path):
    from experiments.controlled.keys import model_fingerprint
    from experiments.controlled.selection import mixture_selector
    from experiments.controlled.stages import knowledge_items, stage_knowledge

    fp = model_fingerprint(cfg.model)
    its = knowledge_items(cfg.knowledge)
    known, _ = stage_knowledge(cfg, cfg.model, fp, tmp_path / "knowledge", its)
    return its, known, mixture_selector(cfg, 0, its, cfg.model, fp, tmp_path / "knowledge")


def test_a_band_no_candidate_reaches_is_refused_with_nothing_written(tiny, tmp_path):
    """A random tiny model's memory is at chance (delta_M ~ 1/K): no candidate is inside the regime."""
    from experiments.controlled.stages import stage_mixture

    cfg = _band_experiment(tiny, tmp_path, (0.0, 1.0))
    its, known, select = _stage_inputs(cfg, tmp_path)
    with pytest.raises(CpiError, match=r"field 'delta_c_band': 0 of 24 candidate records .* 4 needed"):
        stage_mixture(cfg, 0, its, known, tmp_path / "seed-0", select)
    assert not list((tmp_path / "seed-0").glob("data-*/*"))
    with pytest.raises(CpiError, match="field 'delta_c_band': selecting records"):  # a band arm without its base
        stage_mixture(cfg, 0, its, known, tmp_path / "seed-0", None)


@pytest.mark.real
def test_band_arm_through_the_stages_on_smollm2(real_smollm2, tmp_path):
    """The experiment's mixture stage and the regime stage select the same records (one measurement, cached),
    and the stage writes it beside the records."""
    from experiments.controlled.regime_run import RegimeSettings, measure_arms
    from experiments.controlled.selection import mixture_selector
    from experiments.controlled.stages import stage_mixture

    cfg = _band_experiment(real_smollm2, tmp_path, (0.0, 0.5))
    its, known, select = _stage_inputs(cfg, tmp_path)
    data = stage_mixture(cfg, 0, its, known, tmp_path / "seed-0", select)
    sel = pd.read_csv(data.folder / "selection.csv")
    assert len(sel) == data.counts["CS"] * 6 and sel["selected"].sum() >= data.counts["CS"]
    assert in_band(sel, (0.0, 0.5)).tolist() == sel["selected"].tolist()
    cached = sorted((tmp_path / "knowledge" / "selection").glob("*.csv"))
    assert len(cached) == 1
    table, _, _, _ = measure_arms({"band": cfg}, RegimeSettings(n_candidates=4, sim_steps=20), "float32",
                                  tmp_path / "knowledge")
    assert sorted((tmp_path / "knowledge" / "selection").glob("*.csv")) == cached     # reused, not re-measured
    trained = pd.read_json(data.folder / "ift.jsonl", lines=True)
    measured = table[table["source"] == "record"]
    assert sorted(measured["id"]) == sorted(trained["id"])
    chosen = sel[sel["selected"]].head(data.counts["CS"])
    cs = measured[measured["kind"] == "CS"]
    assert sorted(cs["answer"]) == sorted(chosen["answer"])    # the selected candidates are the records trained on
    assert mixture_selector(cfg.replace(**{"mixture.delta_c_band": None}), 0, its, cfg.model, "fp", tmp_path) is None
