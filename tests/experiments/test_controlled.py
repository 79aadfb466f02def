"""The controlled experiment's stages on a tiny random checkpoint: tables, resume, content keys, verdict, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cpi.cli import main
from cpi.errors import ConfigError, CpiError
from experiments.controlled.conditions import compose, load_conditions
from experiments.controlled.config import ControlledConfig, EvalSettings, KnowledgeSettings, TrainSettings
from experiments.controlled.experiment import run_controlled
from experiments.controlled.keys import content_key, model_fingerprint
from experiments.controlled.figures import (
    METRIC_LABELS,
    condition_table,
    plot_accuracy,
    plot_attention,
    plot_sweep,
    plot_sweep_panels,
)
from experiments.controlled.mixture import MixtureConfig
from experiments.controlled.sweep import CONDITIONS
from tests.tiny_models import make_tiny_checkpoint


def tiny_config(model: Path, **changes) -> ControlledConfig:
    cfg = ControlledConfig(
        model=str(model), seeds=(0, 1), threads=1,
        knowledge=KnowledgeSettings(datasets=("CF_World_Facts", "CF_Bio"), n_candidates=4, max_items=40,
                                    batch_size=32),
        mixture=MixtureConfig(n_examples=16, rho=0.5, heldout_fraction=0.5, min_heldout=3),
        finetune=TrainSettings(steps=2, save_steps=1, batch_size=4, learning_rate=1e-3),
        evaluate=EvalSettings(max_items=6, max_new_tokens=6, n_boot=50, probe_items=3, probe_batch_size=4),
    )
    return cfg.replace(**changes) if changes else cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("controlled")
    model = make_tiny_checkpoint(root / "model", "llama", tokenizer_kind="bpe")
    cfg = tiny_config(model)
    run = run_controlled(cfg, root / "run")
    return root, cfg, run


# ------------------------------------------------------------------ the run on a tiny model


@pytest.mark.slow
def test_run_writes_complete_tables(tiny):
    root, cfg, run = tiny
    out = root / "run"
    for name in ("trajectory.csv", "items.csv", "counts.csv", "rates.csv", "probe_steps.csv", "verdict.json",
                 "timings.csv", "controlled_config.json"):
        assert (out / name).is_file(), name
    counts = run.counts.set_index("seed")
    assert list(counts.index) == [0, 1]
    assert (counts["C"] == 8).all() and (counts["CS"] == 8).all() and (counts["CF"] == 0).all()
    # every seed x evaluated item is scored at steps 0 (the base), 1, 2
    for seed in cfg.seeds:
        its = run.items[run.items["seed"] == seed]
        assert sorted(its["step"].unique()) == [0, 1, 2]
        assert its.groupby("step").size().tolist() == [counts.loc[seed, "evaluated"]] * 3
    # the trajectory: one row per seed x step, pooled over the seed's items of both conflict sets
    assert len(run.trajectory) == 2 * 3 and run.trajectory["cf_acc"].between(0, 1).all()
    pooled = run.items.groupby(["seed", "step"])[["cf_correct", "margin", "m_c", "neither"]].mean().reset_index()
    np.testing.assert_allclose(run.trajectory["cf_acc"], pooled["cf_correct"])
    np.testing.assert_allclose(run.trajectory["mean_margin"], pooled["margin"])
    np.testing.assert_allclose(run.trajectory["mean_m_c"], pooled["m_c"])
    np.testing.assert_allclose(run.trajectory["neither_rate"], pooled["neither"])
    # M_C is p_ctx / (p_ctx + p_mem) from the summed log-probs; "neither" is the outcome
    np.testing.assert_allclose(run.items["m_c"], 1 / (1 + np.exp(run.items["logp_parametric"] - run.items["logp_context"])),
                               rtol=1e-3, atol=1e-9)  # the three columns are rounded apart in the CSV
    assert (run.items["neither"] == (run.items["outcome"] == "neither")).all()
    # the answer is the output up to its first line break
    assert not run.items["answer_text"].fillna("").str.contains("\n").any()
    assert (run.trajectory["n"] == run.items.groupby(["seed", "step"]).size().to_numpy()).all()
    assert sorted(run.probe_steps["step"].unique()) == [0, 1, 2]
    assert run.verdict["n_units"] == int(counts["evaluated"].sum()) and run.verdict["steps"] == [0, 1, 2]
    assert list(run.verdicts) == ["m_c", "margin", "cf_correct"] and run.verdict["metric"] == "m_c"
    saved = json.loads((out / "verdict.json").read_text())
    assert saved["primary"] == "m_c" and saved["margin"]["verdict"] == run.verdicts["margin"]["verdict"]
    # held-out conflicts are known facts never finetuned on
    known = set(run.known.loc[run.known["known"].astype(bool), "item_id"])
    for seed in cfg.seeds:
        seed_dir = next((out / f"seed-{seed}").glob("data-*"))
        trained = set(pd.read_csv(seed_dir / "records.csv")["item_id"])
        held = {json.loads(line)["id"] for line in (seed_dir / "heldout.jsonl").read_text().splitlines()}
        assert held <= known and not held & trained
    # the finetuned checkpoints really changed the model: the margins move
    m = run.items.groupby("step")["margin"].mean()
    assert m.loc[2] != m.loc[0]


@pytest.mark.slow
def test_resume_gives_identical_numbers_and_redoes_nothing(tiny):
    root, cfg, run = tiny
    out = root / "run"
    ft = next((out / "seed-0").glob("finetune-*"))
    stamp = (ft / "checkpoint-2").stat().st_mtime_ns
    items_before = (out / "items.csv").read_bytes()
    again = run_controlled(cfg, out)
    assert (out / "items.csv").read_bytes() == items_before
    pd.testing.assert_frame_equal(again.trajectory, run.trajectory)
    assert again.verdict == run.verdict
    assert (ft / "checkpoint-2").stat().st_mtime_ns == stamp
    assert len(list((out / "seed-0").glob("finetune-*"))) == 1
    t = pd.read_csv(out / "timings.csv")
    assert t["invocation"].nunique() >= 2  # earlier invocations' rows are kept


@pytest.mark.slow
def test_two_worker_processes_give_the_same_numbers(tiny, tmp_path):
    root, cfg, run = tiny
    par = run_controlled(cfg.replace(workers=2), tmp_path / "par")
    cols = ["seed", "step", "item_id", "cf_correct", "param_correct", "margin", "m_c", "output"]
    pd.testing.assert_frame_equal(par.items[cols].reset_index(drop=True), run.items[cols].reset_index(drop=True))
    assert par.verdicts == run.verdicts
    stages = set(pd.read_csv(tmp_path / "par" / "timings.csv")["stage"])
    assert {"knowledge", "finetune[0]", "finetune[1]", "evaluate[1]", "probe[1]"} <= stages


@pytest.mark.slow
def test_changed_setting_gets_its_own_folder(tiny):
    root, cfg, _ = tiny
    out = root / "run"
    evals = set((out / "seed-0").glob("eval-*"))
    changed = cfg.replace(seeds=(0,), **{"evaluate.max_new_tokens": 2, "evaluate.max_items": 2})
    run = run_controlled(changed, out)
    new = set((out / "seed-0").glob("eval-*")) - evals
    assert len(new) == 1  # a new evaluation folder; the mixture and finetuning (same inputs) are reused
    assert len(list((out / "seed-0").glob("finetune-*"))) == 1 and len(list((out / "seed-0").glob("data-*"))) == 1
    assert (run.items.groupby("step").size() == 2).all()
    assert list(run.counts["seed"]) == [0]


@pytest.mark.slow
def test_cli_run_prints_verdict_and_writes_figures(tiny, tmp_path, capsys):
    root, cfg, _ = tiny
    cfg_file = tmp_path / "c.yaml"
    cfg.save(cfg_file)
    code = main(["controlled", "run", "--config", str(cfg_file), "--out", str(root / "run"),
                 "--figures", str(tmp_path / "figs")])
    assert code == 0
    text = capsys.readouterr().out
    assert "verdict (M_C" in text and "verdict (log-prob margin" in text and "closed-book known rate, CF_World_Facts" in text
    assert "neither answer" in text
    for name in ("controlled_trajectory", "controlled_theory_overlay"):
        for ext in ("png", "pdf"):
            assert (tmp_path / "figs" / f"{name}.{ext}").stat().st_size > 1000


@pytest.mark.slow
def test_base_knowing_too_few_facts_is_a_one_line_error(tiny, tmp_path, capsys):
    root, cfg, _ = tiny
    cfg_file = tmp_path / "c.json"
    cfg.replace(**{"mixture.min_heldout": 500}).save(cfg_file)
    out = tmp_path / "run"
    code = main(["controlled", "run", "--config", str(cfg_file), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("cpi: error:") and "min_heldout" in err[0]
    assert not list(out.glob("seed-*/data-*"))  # no mixture folder half-written


def test_model_fingerprint_follows_content(tmp_path):
    a = make_tiny_checkpoint(tmp_path / "a", "llama", tokenizer_kind="bpe", seed=0)
    b = make_tiny_checkpoint(tmp_path / "b", "llama", tokenizer_kind="bpe", seed=0)
    c = make_tiny_checkpoint(tmp_path / "c", "llama", tokenizer_kind="bpe", seed=1)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)
    assert content_key({"x": 1}, "y") == content_key({"x": 1}, "y") != content_key({"x": 2}, "y")


# ------------------------------------------------------------------ config and errors


def test_config_round_trips_and_names_nested_fields(tmp_path):
    cfg = ControlledConfig().replace(**{"mixture.rho": 1.0, "finetune.method": "qk_only"}, seeds=(3, 4))
    for suffix in (".json", ".yaml"):
        cfg.save(tmp_path / f"c{suffix}")
        assert ControlledConfig.from_file(tmp_path / f"c{suffix}") == cfg
    with pytest.raises(ConfigError, match=r"field 'mixture\.rho'"):
        ControlledConfig().replace(**{"mixture.rho": 1.5})
    with pytest.raises(ConfigError, match=r"field 'mixture\.rho'"):
        ControlledConfig().replace(**{"mixture.rho": 0.0})
    with pytest.raises(ConfigError, match=r"field 'finetune\.save_steps'"):
        ControlledConfig().replace(**{"finetune.save_steps": 100})
    with pytest.raises(ConfigError, match=r"field 'evaluate\.modes'"):
        ControlledConfig().replace(**{"evaluate.modes": ["logprob"]})
    with pytest.raises(ConfigError, match="field 'seeds'"):
        ControlledConfig(seeds=(1, 1))
    q = ControlledConfig.quick()
    assert q.seeds == (0,) and q.finetune.steps == 4 and q.model == "smollm2-135m-instruct"


def test_cli_rho_outside_range_is_exit_2_one_line(tmp_path, capsys):
    code = main(["controlled", "run", "--set", "mixture.rho=1.5", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "mixture.rho" in err[0] and err[0].startswith("cpi: error:")
    assert not (tmp_path / "r").exists()


def test_conditions_are_data_and_pairs_come_from_them():
    from experiments.controlled.conditions import comparison_pairs

    assert set(CONDITIONS) >= {"rho_low", "rho_mid", "rho_1", "filter", "filter_gap", "augment", "qk_only"}
    base = ControlledConfig()
    cfgs = {n: c.config for n, c in compose(base, list(CONDITIONS), CONDITIONS, knowledge_cache="/x/knowledge").items()}
    assert cfgs["rho_1"].mixture.rho == 1.0 and cfgs["rho_low"].knowledge_cache == "/x/knowledge"
    assert cfgs["rho_mid"] == base.replace(knowledge_cache="/x/knowledge")  # the base's own rho
    assert cfgs["filter"].finetune.filter_fraction == 0.25 and cfgs["filter"].mixture.rho == base.mixture.rho
    assert cfgs["filter"].finetune.filter_criterion == "loss_without_context"  # the paper's filter
    assert cfgs["filter_gap"].finetune.filter_criterion == "gap"
    assert cfgs["augment"].mixture.augment_fraction == 0.1
    assert (cfgs["qk_only"].finetune.method, cfgs["qk_only"].finetune.learning_rate) == ("qk_only", 1e-4)
    pairs = comparison_pairs(["rho_mid", "rho_1", "qk_only"], CONDITIONS)
    assert pairs == [("rho_mid", "rho_1"), ("rho_mid", "qk_only"), ("qk_only", "rho_1")]  # b - a, predicted > 0


def test_a_condition_never_silently_overrides_a_user_setting():
    user = ControlledConfig().replace(**{"mixture.rho": 0.3, "finetune.learning_rate": 1e-3})
    got = compose(user, ["rho_mid", "rho_1", "qk_only"], CONDITIONS)
    assert got["rho_mid"].config.mixture.rho == 0.3 and got["rho_1"].config.mixture.rho == 1.0
    assert got["rho_1"].replaced == {"mixture.rho": (0.3, 1.0)}  # reported, and the user's rho runs in rho_mid
    assert got["qk_only"].config.finetune.learning_rate == 1e-3  # a default never replaces the user's value
    assert got["qk_only"].kept == {"finetune.learning_rate": (1e-3, 1e-4)}
    with pytest.raises(ConfigError, match=r"field 'experiment\.mixture\.rho': set to 0\.3, but every condition"):
        compose(user, ["rho_low", "rho_1"], CONDITIONS, field_prefix="experiment.")


def test_a_user_setting_a_condition_shares_composes_with_interdependent_fields():
    """The base already holds the regime arms' template design: composing 'outside' and the second-phase positive
    control (fields valid only together) replaces nothing and raises nothing."""
    user = ControlledConfig().replace(**{"mixture.design": "verbatim", "mixture.nonce_context_critical": True})
    got = compose(user, ["outside", "positive_control_20"], CONDITIONS)
    assert got["outside"].replaced == {} and got["positive_control_20"].replaced == {}
    pc = got["positive_control_20"].config
    assert pc.mixture.positive_control_start == 0.5 and pc.finetune.data_order == "sequential"


def test_conditions_file_is_validated(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("a:\n  set: {mixture.rho: 0.2}\n  compare_to: {b: lower}\nb:\n  set: {mixture.rho: 1.0}\n")
    table = load_conditions(f)
    assert table["a"].set == {"mixture.rho": 0.2} and table["a"].compare_to == {"b": "lower"}
    for text, match in (("a:\n  set: {mixture.nope: 1}\n", "condition 'a'.*nope"),
                        ("a:\n  set: {mixture.rho: 2.0}\n", r"condition 'a'.*mixture\.rho"),
                        ("a:\n  compare_to: {zz: lower}\n", "unknown condition 'zz'"),
                        ("a:\n  compare_to: {a: up}\n", "'up' is not one of"),
                        ("a:\n  sett: {}\n", "unknown key 'sett'"),
                        ("a: [\n", "not valid YAML")):
        f.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_conditions(f)


@pytest.mark.parametrize("argv, message", [
    (["--conditions", ","], "field 'conditions': give condition names"),
    (["--conditions", "rho_1,nope"], "unknown condition 'nope'"),
    (["--conditions", "rho_1,rho_1"], "'rho_1' given twice"),
    (["--set", "mixture.rho=0.3", "--conditions", "rho_low,rho_1"], "field 'mixture.rho': set to 0.3"),
])
def test_cli_sweep_bad_conditions_are_one_line_errors(tmp_path, capsys, argv, message):
    code = main(["controlled", "sweep", *argv, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("cpi: error:") and message in err[0], err
    assert not (tmp_path / "r").exists()


def test_cli_flags_are_generated_from_the_config():
    from cpi.cli import build_parser
    from experiments.controlled.cli import runner_config
    from experiments.controlled.config import ControlledRunConfig, ControlledSweepConfig

    def cfg(cls, *argv):
        args = build_parser().parse_args(["controlled", "run" if cls is ControlledRunConfig else "sweep", *argv])
        return runner_config(args, cls)

    run = cfg(ControlledRunConfig, "--seeds", "4,5", "--set", "mixture.rho=1.0", "--prefix", "p")
    assert (run.experiment.seeds, run.experiment.mixture.rho, run.prefix, run.out) == ((4, 5), 1.0, "p", "runs/controlled")
    quick = cfg(ControlledRunConfig, "--quick")
    assert quick.experiment == ControlledConfig.quick() and quick.out == "runs/controlled_quick"
    sweep = cfg(ControlledSweepConfig, "--conditions", "rho_mid,rho_1", "--out", "o", "--workers", "2")
    assert (sweep.conditions, sweep.out, sweep.experiment.workers) == (("rho_mid", "rho_1"), "o", 2)


def test_condition_table_and_plots():
    from tests.experiments.test_statistics import items_from

    items = items_from({0: [0.1, 0.6, 0.2], 1: [0.2, 0.5, 0.3]}, n_items=10).assign(
        param_correct=lambda d: 1.0 - d["cf_correct"], margin=0.5, m_c=0.6)
    probe = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "step": [0, 10, 20] * 2,
                          "attn_context": [0.1, 0.3, 0.2, 0.2, 0.4, 0.1], "attn_question": 0.2})
    t = condition_table(items, probe, n_boot=100)
    cf = t[t["metric"] == "cf_acc"].set_index("step")
    assert cf.loc[10, "mean"] == pytest.approx(0.55) and cf.loc[10, "n"] == 20
    assert (cf["lo"] <= cf["mean"]).all() and (cf["mean"] <= cf["hi"]).all()
    at = t[t["metric"] == "attn_context"].set_index("step")
    assert at.loc[10, "lo"] == pytest.approx(0.3) and at.loc[10, "hi"] == pytest.approx(0.4)
    fig = plot_accuracy(t)
    assert [line.get_label() for line in fig.axes[0].lines] == ["M_C = p_ctx / (p_ctx + p_mem)",
                                                                  "counterfactual (context answer)",
                                                                  "parametric (memory)"]
    assert fig.axes[0].get_ylabel() and plot_attention(t).axes[0].get_ylabel()
    sweep = plot_sweep(pd.concat([t.assign(condition="a"), t.assign(condition="b")]))
    assert [line.get_label() for line in sweep.axes[0].lines] == ["a", "b"]
    panels = plot_sweep_panels(pd.concat([t.assign(condition="a"), t.assign(condition="b")]))
    assert [ax.get_ylabel() for ax in panels.axes] == [METRIC_LABELS[m] for m in ("mean_m_c", "cf_acc", "mean_margin",
                                                                                    "attn_context")]
    assert "bootstrap" in panels.axes[0].get_title() and "seed range" in panels.axes[3].get_title()
    assert panels.axes[0].get_legend() is not None and panels.axes[1].get_legend() is None


@pytest.mark.slow
def test_cli_sweep_runs_conditions_with_a_shared_knowledge_cache(tiny, tmp_path, capsys):
    root, cfg, _ = tiny
    cfg_file = tmp_path / "c.yaml"
    cfg.replace(seeds=(0,)).save(cfg_file)
    out = tmp_path / "sweep"
    code = main(["controlled", "sweep", "--config", str(cfg_file), "--conditions", "rho_1,qk_only", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "rho_1: verdict (M_C" in text and "qk_only: verdict (M_C" in text
    assert "rho_1 - qk_only, M_C = p_ctx / (p_ctx + p_mem), step 2:" in text and "paired on 6 seed x item units" in text
    v = pd.read_csv(out / "verdicts.csv")
    assert list(v["condition"]) == ["rho_1"] * 3 + ["qk_only"] * 3
    assert list(v["metric"]) == ["m_c", "margin", "cf_correct"] * 2
    comp = pd.read_csv(out / "comparison.csv")
    assert set(comp["comparison"]) == {"rho_1 - qk_only"} and comp["paired"].all() and sorted(set(comp["step"])) == [0, 1, 2]
    assert len(list((out / "knowledge").iterdir())) == 1  # scored closed-book once for both conditions
    counts = pd.read_csv(out / "rho_1" / "counts.csv")
    assert (counts["CS"] == 0).all() and (counts["C"] == 16).all()
    assert (out / "figures" / "controlled_sweep.png").is_file()
    assert (out / "figures" / "controlled_rho_1_trajectory.png").is_file()


@pytest.mark.slow
def test_interrupted_parallel_run_resumes_with_identical_numbers(tiny, tmp_path):
    """SIGINT to `cpi controlled run` with two worker processes: exit 130, no worker left running,
    and the rerun gives the numbers of an uninterrupted in-process run."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    root, base, _ = tiny
    cfg = base.replace(workers=2, **{"finetune.steps": 30, "finetune.save_steps": 10})
    cfg.save(tmp_path / "c.yaml")
    out = tmp_path / "par"
    argv = [sys.executable, "-m", "cpi.cli", "controlled", "run", "--config", str(tmp_path / "c.yaml"), "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        # a starved machine (CI beside other jobs) can take minutes to reach the first checkpoint
        deadline = time.monotonic() + 1200
        while not list(out.glob("seed-*/finetune-*/checkpoint-10")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert list(out.glob("seed-*/finetune-*/checkpoint-10")), "no checkpoint within 20 minutes"
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, err
        assert "run the same command again to resume" in err and "Traceback" not in err, err
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"worker processes left running: {alive}"
    finally:  # a failed check must not leave the run and its workers behind
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
    assert subprocess.run(argv, capture_output=True, cwd=Path(__file__).resolve().parents[2]).returncode == 0
    ref = run_controlled(cfg.replace(workers=1), tmp_path / "ref")
    resumed = pd.read_csv(out / "items.csv")
    pd.testing.assert_frame_equal(resumed, pd.read_csv(tmp_path / "ref" / "items.csv"))
    assert sorted(resumed["step"].unique()) == [0, 10, 20, 30] and len(ref.items) == len(resumed)


# regression pins: folder keys computed with the code before the ADDED_LATER rule (the inline special
# case that dropped gradient_checkpointing when off); a changed key would re-run every existing stage
FINETUNE_KEYS = {  # name -> (key of ("fp0", "datakey0", seed 0), key of ("fp1", "dk1", seed 2))
    "default": (TrainSettings(), ("a6c7f2c553b9", "6c7aa4a67b03")),
    "default_gc": (TrainSettings(gradient_checkpointing=True), ("3568e3b1498a", "cd77544c1e4a")),
    "main": ("main", ("017e845a36e1", "047e45556a1a")),  # the main job's: gradient checkpointing on
    "main_nogc": ("main", ("f13c785dcd98", "cd793114ceb5")),
    "quick": (ControlledConfig.quick().finetune, ("6ff4f97dcab6", "abaf4eae6929")),
    "qk": (TrainSettings(method="qk_only", steps=20, save_steps=5), ("5e11326c4bb3", "4db0188a5e93")),
}


@pytest.mark.parametrize("name", sorted(FINETUNE_KEYS))
def test_finetune_folder_keys_are_unchanged(name):
    from experiments.main_job import default_experiment

    settings, (first, second) = FINETUNE_KEYS[name]
    if settings == "main":
        settings = default_experiment().finetune.replace(gradient_checkpointing=name == "main")
    assert (content_key("fp0", "datakey0", settings, 0), content_key("fp1", "dk1", settings, 2)) == (first, second)


def test_mixture_folder_keys_are_unchanged():
    # records_format 2 (records carry context / question) changed them once: b499eafd1711, 2c706ec9ca17 before
    assert content_key(MixtureConfig().replace(seed=1), "itemskey", [["a", True], ["b", False]]) == "dac3e0855071"
    old_main = MixtureConfig(n_examples=48, rho=0.5, heldout_fraction=0.5, min_heldout=12)  # the main job's before issue 19
    assert content_key(old_main.replace(seed=2), "itemskey", [["a", True]]) == "982b82120cd0"


def test_gradient_checkpointing_enters_the_key_only_when_on():
    off, on = TrainSettings(), TrainSettings(gradient_checkpointing=True)
    assert "gradient_checkpointing" not in off.content_dict() and on.content_dict()["gradient_checkpointing"] is True
    assert off.to_dict()["gradient_checkpointing"] is False  # saved configs still record it
    assert content_key(off) != content_key(on)


# ------------------------------------------------------------------ the filter's no-context form


@pytest.mark.parametrize("layout", __import__("experiments.controlled.mixture", fromlist=["INPUT_LAYOUTS"]).INPUT_LAYOUTS)
def test_without_context_keeps_the_question_for_every_mixture_layout(layout):
    from fullscale.ift_data import IFTExample, parse_record

    passage, question = "Maputo is the capital of Mozambique.", "What is the capital of Mozambique?"
    rec = {"id": "r", "instruction": "Read the passage and answer the question.", "output": "Maputo",
           "input": layout.format(c=passage, q=question)}
    for ex in (parse_record("f:1", rec), parse_record("f:1", {**rec, "context": passage, "question": question})):
        assert ex.has_context and ex.context == passage and ex.qa_question == question
        closed = ex.without_context()
        assert not closed.has_context and closed.input == "" and closed.output == "Maputo"
        assert closed.instruction.endswith(f"Question: {question}") and "Maputo is" not in closed.instruction
    explicit = parse_record("f:1", {**rec, "context": passage, "question": question})
    assert explicit.to_record()["question"] == question and "question" not in explicit.meta
    # a record whose input has no question keeps its instruction and loses its input
    plain = IFTExample("p", "Summarise.", "Some text.", "Short.").without_context()
    assert (plain.instruction, plain.input) == ("Summarise.", "")


def test_explicit_split_is_validated():
    from fullscale.ift_data import parse_record

    rec = {"instruction": "i", "input": "x", "output": "o"}
    with pytest.raises(CpiError, match="'context' is given without 'question'"):
        parse_record("f:3", {**rec, "context": "c"})
    with pytest.raises(CpiError, match="f:3: field 'question' must be a string"):
        parse_record("f:3", {**rec, "question": 3})
