"""The model organism: world, tokenizer and IFT generator (fast), and the quick pipeline end to end (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cpi.errors import ConfigError
from experiments.organism.ift import IFTConfig, make_eval_items, make_ift_records, write_eval_jsonl, write_ift_jsonl
from experiments.organism.world import RELATIONS, WorldConfig, build_tokenizer, build_world

SMALL = WorldConfig(n_known_countries=6, n_known_people=10, n_new_countries=6, n_new_people=10, n_cities=20,
                    n_throwaway=10, seed=3)


def test_world_is_deterministic_by_seed_and_changes_with_it():
    a, b = build_world(SMALL), build_world(SMALL)
    assert a == b
    c = build_world(SMALL.replace(seed=4))
    assert c.known_facts != a.known_facts


def test_world_splits_are_disjoint_and_complete():
    w = build_world(SMALL)
    known = {f.subject for f in w.known_facts}
    new = {f.subject for f in w.new_facts}
    assert known.isdisjoint(new)
    assert w.eval_subjects <= known
    assert set(w.throwaway).isdisjoint(known | new | set(w.cities))
    # every known person has a birthplace and a field; every country a capital, all distinct
    capitals = [f.obj for f in w.known_facts + w.new_facts if f.relation == "capital"]
    assert len(capitals) == len(set(capitals)) == SMALL.n_known_countries + SMALL.n_new_countries
    assert {f.relation for f in w.known_facts} == set(RELATIONS)
    for f in w.known_facts:
        assert f.obj in w.objects(f.relation)


def test_world_config_rejects_impossible_sizes():
    with pytest.raises(ConfigError, match="n_cities"):
        WorldConfig(n_known_countries=30, n_new_countries=30, n_cities=40)
    with pytest.raises(ConfigError, match="eval_fraction"):
        WorldConfig(eval_fraction=1.0)


def test_tokenizer_is_word_level_with_bos_and_no_space_sensitivity(tmp_path: Path):
    from transformers import AutoTokenizer

    w = build_world(SMALL)
    tok = build_tokenizer(w)
    city = w.cities[0]
    assert tok(" " + city, add_special_tokens=False)["input_ids"] == tok(city, add_special_tokens=False)["input_ids"]
    assert len(tok(city, add_special_tokens=False)["input_ids"]) == 1
    enc = tok(f"The capital of {w.known_facts[0].subject} is {city}.")
    assert enc["input_ids"][0] == tok.bos_token_id
    assert tok.unk_token_id not in enc["input_ids"]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(f"{city} .")["input_ids"] == tok(f"{city} .")["input_ids"]


def test_ift_mixture_composition_and_determinism():
    w = build_world(SMALL)
    cfg = IFTConfig(n_examples=200, rho=0.25, recall_fraction=0.1, augment_fraction=0.05, seed=1)
    recs = make_ift_records(w, cfg)
    assert recs == make_ift_records(w, cfg)
    kinds = [r["kind"] for r in recs]
    assert kinds.count("S") == 20 and kinds.count("CF") == 10
    assert kinds.count("C") == round(0.25 * 170) and kinds.count("CS") == 170 - round(0.25 * 170)
    new = {f.subject for f in w.new_facts}
    facts = {(f.subject, f.relation): f.obj for f in w.known_facts + w.new_facts}
    for r in recs:
        if r["kind"] == "C":
            assert r["subject"] in new and r["output"] in r["input"]
        elif r["kind"] == "CS":
            assert r["subject"] not in new and r["output"] == facts[(r["subject"], r["relation"])]
            assert r["output"] in r["input"]
        elif r["kind"] == "S":
            assert r["input"] == "" and r["output"] == facts[(r["subject"], r["relation"])]
        else:  # counterfactual augmentation: the context answer, not the known fact
            assert r["output"] != facts[(r["subject"], r["relation"])] and r["output"] in r["input"]


def test_no_eval_subject_or_phrasing_leaks_into_finetuning(tmp_path: Path):
    w = build_world(SMALL)
    recs = make_ift_records(w, IFTConfig(n_examples=300, rho=0.5, recall_fraction=0.1, augment_fraction=0.1))
    items = make_eval_items(w)
    assert len(items) == len(w.eval_facts) > 0
    ift_text = " ".join(r["instruction"] + " " + r["input"] for r in recs).lower().split()
    for it in items:
        assert it.subject not in ift_text
        assert it.item.context_answer != it.item.parametric_answer
        assert it.item.context_answer in it.item.context and it.item.parametric_answer not in it.item.context.split()
    ift_questions = {r["question"] for r in recs}
    ift_contexts = {r["context"] for r in recs}
    assert not {it.item.question for it in items} & ift_questions
    assert not {it.item.context for it in items} & ift_contexts
    # the files are what the evaluation and finetuning code read
    from fullscale.conflicts import load_conflicts, validate_file

    path = write_eval_jsonl(items, tmp_path / "eval.jsonl")
    assert validate_file(path) == []
    loaded = load_conflicts(path)
    assert [x.id for x in loaded] == [x.item.id for x in items]
    ift = write_ift_jsonl(recs, tmp_path / "ift.jsonl")
    lines = [json.loads(x) for x in ift.read_text().splitlines()]
    assert set(lines[0]) == {"id", "instruction", "input", "output"} and len(lines) == len(recs)


def test_ift_config_validation():
    with pytest.raises(ConfigError, match="rho"):
        IFTConfig(rho=1.5)
    with pytest.raises(ConfigError, match="augment_fraction"):
        IFTConfig(recall_fraction=0.6, augment_fraction=0.5)


# ---------------------------------------------------------------------------------------------
# the run's config: nested stage configs, one seed


def test_organism_config_nests_the_stage_configs_with_the_numbers_the_organism_ran_with():
    from experiments.organism.experiment import OrganismConfig
    from experiments.organism.pretrain import PretrainConfig

    cfg = OrganismConfig()
    # the defaults `cpi run` has always used (docs/organism.md); PretrainConfig's own defaults are these
    assert (cfg.pretrain.copy_fraction, cfg.pretrain.qa_fraction, cfg.pretrain.copy_filler) == (0.3, 0.3, 0)
    assert (cfg.pretrain.steps, cfg.pretrain.warmup, cfg.pretrain.lr, cfg.pretrain.threads) == (1500, 100, 3e-3, 1)
    assert cfg.pretrain == PretrainConfig(threads=1)
    assert (cfg.world.n_known_countries, cfg.world.n_known_people, cfg.world.n_cities) == (40, 80, 100)
    assert (cfg.ift.n_examples, cfg.ift.rho, cfg.finetune.steps, cfg.finetune.save_steps) == (2000, 0.3, 300, 25)
    quick = OrganismConfig.quick()
    assert (quick.pretrain.steps, quick.pretrain.warmup, quick.pretrain.copy_fraction, quick.pretrain.qa_fraction,
            quick.pretrain.copy_filler) == (500, 50, 0.2, 0.0, 2)
    assert (quick.world.n_known_countries, quick.ift.n_examples, quick.finetune.steps) == (16, 600, 120)


def test_organism_config_dotted_overrides_one_seed_and_round_trip(tmp_path):
    from experiments.organism.experiment import OrganismConfig

    cfg = OrganismConfig.quick().with_overrides(["ift.rho=0.5", "pretrain.steps=40", "seed=3", "finetune.learning_rate=2e-3"])
    assert (cfg.ift.rho, cfg.pretrain.steps, cfg.finetune.learning_rate) == (0.5, 40, 2e-3)
    assert cfg.world.seed == cfg.pretrain.seed == cfg.ift.seed == 3  # one seed for every stage
    assert cfg.world == OrganismConfig.quick().world.replace(seed=3)  # the rest of the world unchanged
    for suffix in (".json", ".yaml"):
        cfg.save(tmp_path / f"c{suffix}")
        assert OrganismConfig.from_file(tmp_path / f"c{suffix}") == cfg
    with pytest.raises(ConfigError, match="field 'world.seed': set by the run's 'seed'"):
        cfg.with_overrides(["world.seed=4"])
    with pytest.raises(ConfigError, match="rho"):
        cfg.with_overrides(["ift.rho=1.5"])
    with pytest.raises(ConfigError, match="unknown field 'nope'"):
        cfg.with_overrides(["ift.nope=1"])
    with pytest.raises(ConfigError, match="'eval_modes' is not a nested config"):
        cfg.with_overrides(["eval_modes.x=1"])
    with pytest.raises(ConfigError, match=r"field 'ft_lr': moved into the finetune block: finetune\.learning_rate"):
        cfg.with_overrides(["ft_lr=1e-3"])
    with pytest.raises(ConfigError, match="unknown field 'rho' for OrganismConfig"):
        cfg.with_overrides(["rho=0.5"])


def test_stages_left_out_need_their_outputs_on_disk(tmp_path):
    """`stages=("data", "evaluate")` on an empty folder: a one-line error, not an UnboundLocalError."""
    from cpi.errors import CpiError
    from experiments.organism.experiment import OrganismConfig, run_organism

    cfg = OrganismConfig.quick(out=str(tmp_path / "r"))
    with pytest.raises(CpiError, match="no pretrained base model; run the 'pretrain' stage first"):
        run_organism(cfg, stages=("data", "evaluate"))
    assert not (tmp_path / "r").exists()  # refused before writing anything
    (tmp_path / "r" / "base" / "checkpoint-0").mkdir(parents=True)
    (tmp_path / "r" / "base" / "checkpoint-0" / "config.json").write_text("{}")
    with pytest.raises(CpiError, match=r"no finished finetuning \(120 steps\); run the 'finetune' stage first"):
        run_organism(cfg, stages=("data", "probe"))
    run = run_organism(cfg, stages=("data",))  # data only: nothing else needed
    assert run.eval_summary.empty and (tmp_path / "r" / "data" / "eval.jsonl").is_file()


def test_run_folder_is_the_configs_out_and_not_part_of_its_content(tmp_path):
    """`out` says where, not what: a moved folder (or one written before `out` existed) is the same
    run; a changed content field is still refused."""
    import json
    import shutil

    from cpi.errors import CpiError
    from experiments.organism.experiment import OrganismConfig, run_organism

    cfg = OrganismConfig.quick(out=str(tmp_path / "a"))
    assert OrganismConfig.quick().out == "runs/organism_quick" and OrganismConfig().out == "runs/organism"
    assert "out" not in cfg.content_dict() and cfg.to_dict()["out"] == str(tmp_path / "a")
    run_organism(cfg, stages=("data",))
    assert (tmp_path / "a" / "data" / "eval.jsonl").is_file()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    saved = tmp_path / "b" / "organism_config.json"
    record = json.loads(saved.read_text())
    del record["config"]["out"]  # a folder made before the field existed
    saved.write_text(json.dumps(record))
    run = run_organism(cfg.replace(out=str(tmp_path / "b")), stages=("data",))
    assert run.out == tmp_path / "b"
    with pytest.raises(CpiError, match=r"different config \(fields finetune\)"):
        run_organism(cfg.replace(out=str(tmp_path / "b"), **{"finetune.learning_rate": 5e-3}), stages=("data",))


def test_run_sets_its_threads_then_restores_them(tmp_path, monkeypatch):
    import torch

    import experiments.organism.experiment as ex

    seen = []
    inner = ex._run_stages
    monkeypatch.setattr(ex, "_run_stages", lambda *a: seen.append(torch.get_num_threads()) or inner(*a))
    before = torch.get_num_threads()
    threads = 2 if before != 2 else 1
    ex.run_organism(ex.OrganismConfig.quick(threads=threads, out=str(tmp_path / "t")), stages=("data",))
    assert seen == [threads] and torch.get_num_threads() == before


# ---------------------------------------------------------------------------------------------
# the quick pipeline end to end (the variant `cpi run --quick` uses)


def test_seed_and_sweep_plots_draw_the_table():
    """Plots draw exactly the table's numbers: one line per seed (plot_seeds), seed mean (plot_rho_sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import pandas as pd

    from experiments.organism.figures import plot_rho_sweep, plot_seeds

    steps = [0, 25, 50]
    table = pd.DataFrame([dict(variant=v, seed=s, step=t, cf_acc=0.1 * s + 0.01 * t, ctx_attn=0.5)
                          for v in ("a", "b") for s in (0, 1, 2) for t in steps])
    fig = plot_seeds(table, "a", metric="cf_acc")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3 and [list(line.get_xdata()) for line in lines] == [steps] * 3
    assert np.allclose(lines[2].get_ydata(), [0.2, 0.45, 0.7])
    assert fig.axes[0].get_ylabel() == "counterfactual accuracy"
    fig = plot_rho_sweep(table, metric="cf_acc", variants=["b"])
    assert np.allclose(fig.axes[0].get_lines()[0].get_ydata(), [0.1, 0.35, 0.6])  # mean over seeds 0, 1, 2
    with pytest.raises(ValueError, match="variant 'c' not in the table"):
        plot_seeds(table, "c")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`cpi organism run --quick`, then its run folder read back (every stage resumes)."""
    from cpi.cli import main
    from experiments.organism.experiment import OrganismConfig, run_organism

    out = tmp_path_factory.mktemp("organism_quick")
    cwd = tmp_path_factory.mktemp("cwd")
    here = Path.cwd()
    os.chdir(cwd)  # figures only where --figures says, never into ./figures
    try:
        assert main(["organism", "run", "--quick", "--out", str(out), "--figures", str(out / "figures")]) == 0
    finally:
        os.chdir(here)
    assert not (cwd / "figures").exists()
    return run_organism(OrganismConfig.quick(out=str(out)))


@pytest.mark.slow
def test_organism_command_writes_its_figures_and_timings(quick_run):
    import pandas as pd

    names = {p.name for p in (quick_run.out / "figures").iterdir()}
    for stem in ("organism_inversion", "organism_probe_attention"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
    # two invocations so far (the command, then the fixture's read-back): both kept, the first one complete
    timings = pd.read_csv(quick_run.out / "timings.csv")
    first, second = (g for _, g in timings.groupby("invocation", sort=True))
    assert list(first["stage"]) == ["data", "pretrain", "finetune", "evaluate", "probe"]
    assert list(second["stage"]) == ["data", "pretrain", "finetune", "evaluate", "probe"]
    assert timings["wall_s"].gt(0).all() and timings["peak_rss_mib"].gt(0).all()  # no NaN, no zero
    assert first.loc[first["stage"] == "pretrain", "wall_s"].item() > 10 * second.loc[
        second["stage"] == "pretrain", "wall_s"].item()  # the second one resumed: nothing retrained


@pytest.mark.slow
def test_quick_run_knows_its_facts(quick_run):
    # closed-book recall of the pretrained base model, greedy next token after "the capital of X is"
    assert quick_run.closed_book_recall >= 0.8, quick_run.recall.groupby("relation")["correct"].mean()
    assert (quick_run.out / "pretrain" / "recall.csv").is_file()


@pytest.mark.slow
def test_quick_run_base_reading_table(quick_run):
    """The base's in-context reading: one row per new fact and per held-out known fact, answers consistent."""
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from experiments.organism.pretrain import context_reading
    from experiments.organism.world import build_world

    world = build_world(quick_run.config.world)
    r = quick_run.reading
    assert (r["kind"] == "novel").sum() == len(world.new_facts) and (r["kind"] == "conflict").sum() == len(world.eval_facts)
    conflict = r[r["kind"] == "conflict"]
    assert (conflict["context_answer"] != conflict["parametric_answer"]).all()  # a real conflict every time
    assert not (r["follows_context"] & r["follows_memory"]).any()
    assert not r.loc[r["kind"] == "novel", "follows_memory"].any()
    assert r["follows_context"].eq(r["predicted"] == r["context_answer"]).all()
    on_disk = pd.read_csv(quick_run.out / "pretrain" / "reading.csv", keep_default_na=False)
    assert list(on_disk["predicted"]) == list(r["predicted"])
    base = quick_run.out / "base" / "checkpoint-0"
    again = context_reading(AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base), world,
                            seed=quick_run.config.seed)
    assert again.equals(r)  # same seed, same table
    shares = quick_run.base_reading()
    assert set(shares) == {"novel_context", "conflict_context", "conflict_memory"}
    assert shares["conflict_memory"] == pytest.approx(conflict["follows_memory"].mean())


@pytest.mark.slow
def test_quick_run_checkpoints_written_and_reloadable(quick_run):
    from fullscale.checkpoints import discover_checkpoints, load_checkpoint

    cfg = quick_run.config
    ckpts = discover_checkpoints([quick_run.out / "base" / "checkpoint-0", quick_run.out / "finetune"])
    steps = [c.step for c in ckpts]
    assert steps == list(range(0, cfg.finetune.steps + 1, cfg.finetune.save_steps))
    model, tok = load_checkpoint(ckpts[-1])
    assert model.config.num_hidden_layers == cfg.pretrain.n_layers
    # the final checkpoint differs from the base (finetuning happened)
    base, _ = load_checkpoint(ckpts[0])
    w_final = dict(model.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    w_base = dict(base.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    assert not bool((w_final == w_base).all())


@pytest.mark.slow
def test_quick_run_eval_and_probe_tables_complete(quick_run):
    cfg = quick_run.config
    steps = set(range(0, cfg.finetune.steps + 1, cfg.finetune.save_steps))
    items, summary = quick_run.eval_items, quick_run.eval_summary
    n_items = len(quick_run.out.joinpath("data", "eval.jsonl").read_text().splitlines())
    assert set(items["step"]) == steps
    assert items.groupby("step")["item_id"].nunique().eq(n_items).all()
    assert set(summary["step"]) == steps and summary["cf_acc"].notna().all()
    probe = quick_run.probe
    assert set(probe["step"]) == steps
    heads = probe[(probe["component"] == "head") & (probe["metric"] == "attn")]
    per_step = heads.groupby("step")[["layer", "head"]].apply(lambda g: len(g.drop_duplicates()))
    assert per_step.eq(cfg.pretrain.n_layers * cfg.pretrain.n_heads).all()
    # the trajectory is a real one: the finetuned model answers differently from the base
    traj = quick_run.trajectory()
    assert traj["mean_margin"].nunique() > 1


@pytest.mark.slow
def test_quick_run_figures_and_resume(quick_run, tmp_path):
    from experiments.organism.experiment import run_organism
    from experiments.organism.figures import make_organism_figures

    paths = make_organism_figures(quick_run, tmp_path)
    names = {p.name for p in paths}
    for stem in ("organism_inversion", "organism_probe_attention", "organism_probe_values", "organism_probe_heads"):
        assert f"{stem}.png" in names and f"{stem}.pdf" in names
    for p in paths:
        assert p.stat().st_size > 1000
    # a second call resumes: every stage is read back, numbers identical
    again = run_organism(quick_run.config)
    assert again.eval_summary.equals(quick_run.eval_summary)
    assert again.closed_book_recall == quick_run.closed_book_recall
