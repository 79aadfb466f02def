"""Instruction finetuning on tiny models: checkpoints, resume, QK-only, LoRA, guards, tracking, CLI."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from cpi.errors import ConfigError, CpiError
from tests.fullscale.ft_helpers import alpaca_records, base_config, conflict_records, make_base, write_jsonl


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ft")
    return {
        "root": root,
        "llama": make_base(root, "llama"),
        "neox": make_base(root, "neox"),
        "data": write_jsonl(root / "alpaca.jsonl", alpaca_records(16)),
    }


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _steps(out: Path) -> list[int]:
    from fullscale.finetune import list_checkpoints

    return [s for s, _ in list_checkpoints(out)]


# --------------------------------------------------------------------------- config


def test_config_validation_and_example_file():
    from fullscale.finetune import FinetuneConfig

    ok = dict(base_model="m", data="d.jsonl", output_dir="o")
    with pytest.raises(ConfigError, match=r"unknown template 'vicuna' \(known templates: plain, alpaca, chat\)"):
        FinetuneConfig(**ok, template="vicuna")
    with pytest.raises(ConfigError, match="qk_only"):
        FinetuneConfig(**ok, qk_only=True).replace(lora={"rank": 4})
    with pytest.raises(ConfigError, match="augment_sources"):
        FinetuneConfig(**ok, augment_fraction=0.1)
    with pytest.raises(ConfigError, match="unknown field 'lora_rank'"):
        FinetuneConfig(**ok).with_overrides(["lora_rank=4"])
    with pytest.raises(ConfigError, match="unknown field 'rnk' for LoraSettings"):
        FinetuneConfig(**ok).with_overrides(["lora.rnk=4"])
    c = FinetuneConfig(**ok).with_overrides(["lora.rank=16", "tracking.every_steps=10", "learning_rate=1e-4"])
    assert (c.lora.rank, c.lora.alpha, c.tracking.every_steps, c.learning_rate) == (16, 256.0, 10, 1e-4)
    assert c.with_overrides(["lora=null"]).lora is None
    assert FinetuneConfig.from_dict(json.loads(c.to_json())) == c  # round trip, nested blocks included
    cfg = FinetuneConfig.from_file(Path(__file__).parents[2] / "fullscale/configs/finetune_example.yaml")
    assert cfg.save_steps == 50 and cfg.lora.rank == 128 and cfg.tracking.every_steps == 50
    assert cfg.per_device_batch_size * cfg.gradient_accumulation_steps == 128
    assert FinetuneConfig(**ok).save_steps == 50  # the paper's cadence is the default


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    root = Path(__file__).parents[2] / "fullscale/configs"
    kinds = {f: str(load_config_from_file(str(root / f"accelerate_{f}.yaml")).distributed_type)
             for f in ("single_gpu", "multi_gpu_ddp", "fsdp")}
    assert kinds == {"single_gpu": "DistributedType.NO", "multi_gpu_ddp": "DistributedType.MULTI_GPU",
                     "fsdp": "DistributedType.FSDP"}
    fsdp = load_config_from_file(str(root / "accelerate_fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT" and fsdp["fsdp_use_orig_params"] is True


# --------------------------------------------------------------------------- full run


def test_full_finetune_layout_reload_and_loss_falls(env, tmp_path):
    import pandas as pd
    import torch

    from fullscale.checkpoints import discover_checkpoints, load_checkpoint
    from fullscale.finetune import read_train_log, run_finetune

    out = run_finetune(base_config(env["llama"], env["data"], tmp_path / "run", max_steps=12, save_steps=4))
    assert _steps(out) == [4, 8, 12]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    ck = out / "checkpoint-8"
    for f in ("model.safetensors", "config.json", "tokenizer.json", "trainer_state.json", "rng_state.pth"):
        assert (ck / f).is_file(), f
    # optimizer state is kept for the newest checkpoint only (keep_optimizer_states="last")
    assert (out / "checkpoint-12/optimizer.pt").is_file() and (out / "checkpoint-12/scheduler.pt").is_file()
    assert not (ck / "optimizer.pt").exists() and not (out / "checkpoint-4/scheduler.pt").exists()
    assert json.loads((ck / "trainer_state.json").read_text())["global_step"] == 8
    found = discover_checkpoints(out)
    assert [c.step for c in found] == [4, 8, 12] and not any(c.adapter for c in found)
    model, tok = load_checkpoint(found[-1], device="cpu", dtype="float32")
    ids = tok("What is the capital of Italy?", return_tensors="pt")["input_ids"]
    assert torch.isfinite(model(ids).logits).all()
    # the weights really changed between checkpoints
    w4, w12 = _weights(out / "checkpoint-4"), _weights(out / "checkpoint-12")
    assert any(not torch.equal(w4[k], w12[k]) for k in w4)
    log = read_train_log(out)
    losses = log.dropna(subset=["loss"]).set_index("step")["loss"]
    assert losses.index.tolist() == list(range(1, 13))
    assert losses.iloc[-3:].mean() < losses.iloc[:3].mean() - 0.3, losses.tolist()
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["n_train"] == 16 and summary["n_loaded"] == 16
    meta = json.loads((out / "finetune_config.json").read_text())
    assert meta["config"]["max_steps"] == 12 and "git_hash" in meta["meta"]
    assert isinstance(log, pd.DataFrame)


def test_existing_checkpoints_need_resume_and_a_finished_run_is_left_alone(env, tmp_path):
    from fullscale.finetune import run_finetune

    # 3 steps end mid-epoch (16 examples / batch 4 = 4 steps per epoch): Trainer itself would run a 4th
    cfg = base_config(env["llama"], env["data"], tmp_path / "run", max_steps=3)
    run_finetune(cfg)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run/checkpoint-3").iterdir()}
    assert run_finetune(cfg) == tmp_path / "run"
    assert _steps(tmp_path / "run") == [2, 3]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run/checkpoint-3").iterdir()} == before
    with pytest.raises(CpiError, match="already holds checkpoints.*checkpoint-3"):
        run_finetune(cfg.replace(resume=False))


# --------------------------------------------------------------------------- QK-only


@pytest.mark.parametrize("arch", ["llama", "neox"])
def test_qk_only_freezes_everything_else(env, tmp_path, arch):
    import torch

    from fullscale.finetune import run_finetune
    from fullscale.qk_only import neox_qk_row_mask

    # weight decay on: the frozen slices must stay bit-identical anyway
    out = run_finetune(base_config(env[arch], env["data"], tmp_path / "qk", qk_only=True, max_steps=3,
                                   save_steps=3, weight_decay=0.1))
    before, after = _weights(env[arch]), _weights(out / "checkpoint-3")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if arch == "llama":
        assert changed and all(k.endswith(("q_proj.weight", "k_proj.weight")) for k in changed), changed
        assert {k for k in before if k.endswith(("q_proj.weight", "k_proj.weight"))} == changed
    else:
        assert changed and all("query_key_value" in k for k in changed), changed
        rows = neox_qk_row_mask(n_heads=4, d_head=8)
        for k in changed:
            b, a = before[k], after[k]
            assert torch.equal(b[~rows], a[~rows]), f"value slice of {k} changed"
            assert not torch.equal(b[rows], a[rows]), f"q/k slice of {k} did not train"


def test_neox_fused_layout_matches_transformers():
    """Perturbing the rows the mask calls 'value' leaves the attention pattern unchanged; perturbing
    the query/key rows changes it (checks the [head_index, 3, d_head] layout against GPTNeoXAttention)."""
    import torch
    from transformers import AutoModelForCausalLM

    from fullscale.qk_only import neox_qk_row_mask
    from tests.tiny_models import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config("neox", vocab_size=50)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg).eval()
    ids = torch.randint(0, 50, (1, 7))
    qkv = model.gpt_neox.layers[0].attention.query_key_value
    rows = neox_qk_row_mask(4, 8)

    def pattern():
        with torch.no_grad():
            return model(ids, output_attentions=True).attentions[0].clone()

    base = pattern()
    with torch.no_grad():
        qkv.weight[~rows] += torch.randn_like(qkv.weight[~rows])
    assert torch.allclose(pattern(), base, atol=1e-6)
    with torch.no_grad():
        qkv.weight[rows] += torch.randn_like(qkv.weight[rows])
    assert not torch.allclose(pattern(), base, atol=1e-3)


# --------------------------------------------------------------------------- LoRA


def test_lora_runs_and_reloads(env, tmp_path):
    import torch

    from fullscale.checkpoints import discover_checkpoints, load_checkpoint
    from fullscale.finetune import run_finetune

    cfg = base_config(env["llama"], env["data"], tmp_path / "lora", max_steps=4,
                      lora={"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    out = run_finetune(cfg)
    ck = out / "checkpoint-4"
    assert (ck / "adapter_config.json").is_file() and (ck / "adapter_model.safetensors").is_file()
    assert json.loads((ck / "adapter_config.json").read_text())["base_model_name_or_path"] == str(env["llama"].resolve())
    found = discover_checkpoints(out)
    assert [c.step for c in found] == [2, 4] and all(c.adapter for c in found)
    merged, _ = load_checkpoint(found[-1], device="cpu", dtype="float32")
    base = _weights(env["llama"])
    sd = merged.state_dict()
    assert not torch.equal(sd["model.layers.0.self_attn.v_proj.weight"], base["model.layers.0.self_attn.v_proj.weight"])
    assert torch.equal(sd["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])
    # resume of an adapter run continues (a longer linear schedule changes the learning rates: forced)
    with pytest.raises(CpiError, match=r"resuming with changed max_steps \(4 -> 6\)"):
        run_finetune(cfg.replace(max_steps=6))
    run_finetune(cfg.replace(max_steps=6, force_resume=True))
    assert _steps(out) == [2, 4, 6]
    segments = json.loads((out / "finetune_config.json").read_text())["segments"]
    assert [(g["start_step"], g["config"]["max_steps"], g["forced_changes"]) for g in segments] == [
        (0, 4, []), (4, 6, ["max_steps (4 -> 6)"])]


# --------------------------------------------------------------------------- bf16


@pytest.fixture
def cpu_bf16(monkeypatch):
    """bf16 allowed whatever this CPU has (torch emulates it where the instructions are missing)."""
    monkeypatch.setenv("CPI_CPU_BF16", "1")


def _optimizer_dtypes(ck: Path) -> set:
    import torch

    state = torch.load(ck / "optimizer.pt", weights_only=False)["state"]
    return {v.dtype for st in state.values() for v in st.values() if torch.is_tensor(v) and v.dim() > 0}


def test_bf16_lora_keeps_adapters_and_optimizer_in_float32(env, tmp_path, cpu_bf16):
    import torch
    from safetensors.torch import load_file

    from fullscale.finetune import read_train_log, run_finetune

    out = run_finetune(base_config(env["llama"], env["data"], tmp_path / "lora", max_steps=8, save_steps=4,
                                   dtype="bfloat16", lora={"rank": 4, "alpha": 8, "dropout": 0.0}))
    adapter = load_file(str(out / "checkpoint-8/adapter_model.safetensors"))
    assert adapter and {v.dtype for v in adapter.values()} == {torch.float32}
    assert _optimizer_dtypes(out / "checkpoint-8") == {torch.float32}
    record = json.loads((out / "finetune_config.json").read_text())
    assert record["dtype"] == "bfloat16" and record["segments"][-1]["dtype"] == "bfloat16"
    losses = read_train_log(out).dropna(subset=["loss"])["loss"]
    assert losses.notna().all() and losses.between(0, 20).all()


def test_bf16_qk_only_holds_the_frozen_weights_in_bf16(env, tmp_path, cpu_bf16):
    import torch

    from fullscale.finetune import run_finetune

    out = run_finetune(base_config(env["llama"], env["data"], tmp_path / "qk", qk_only=True, max_steps=3,
                                   save_steps=3, dtype="bfloat16"))
    before, after = _weights(env["llama"]), _weights(out / "checkpoint-3")
    for k, w in after.items():
        if k.endswith(("q_proj.weight", "k_proj.weight")):
            assert w.dtype == torch.float32 and not torch.equal(w, before[k]), k
        else:  # frozen: the base weight rounded to bf16 once, never changed
            assert w.dtype == torch.bfloat16 and torch.equal(w, before[k].to(torch.bfloat16)), k
    assert _optimizer_dtypes(out / "checkpoint-3") == {torch.float32}


def test_bf16_full_finetuning_keeps_float32_master_weights_and_learns(env, tmp_path, cpu_bf16):
    import torch

    from fullscale.finetune import read_train_log, run_finetune

    out = run_finetune(base_config(env["llama"], env["data"], tmp_path / "full", max_steps=12, save_steps=12,
                                   dtype="bfloat16"))
    assert {w.dtype for w in _weights(out / "checkpoint-12").values()} == {torch.float32}
    losses = read_train_log(out).dropna(subset=["loss"])["loss"]
    assert losses.iloc[-3:].mean() < losses.iloc[:3].mean() - 0.3, losses.tolist()


def test_a_run_never_resumes_in_another_dtype_and_auto_falls_back(env, tmp_path, monkeypatch):
    from fullscale.finetune import run_finetune

    monkeypatch.setenv("CPI_CPU_BF16", "0")  # a CPU without bf16: auto means float32
    cfg = base_config(env["llama"], env["data"], tmp_path / "run", max_steps=2, dtype="auto")
    run_finetune(cfg)
    assert json.loads((tmp_path / "run/finetune_config.json").read_text())["dtype"] == "float32"
    monkeypatch.setenv("CPI_CPU_BF16", "1")  # the same config now resolves to bf16: not into this folder
    with pytest.raises(CpiError, match=r"resuming with changed resolved dtype \('float32' -> 'bfloat16'\);"):
        run_finetune(cfg)  # not even "already finished"
    assert _steps(tmp_path / "run") == [2]


def test_unknown_lora_target_is_named(env, tmp_path):
    from fullscale.finetune import run_finetune

    cfg = base_config(env["neox"], env["data"], tmp_path / "bad", lora={"rank": 4, "target_modules": ["q_proj"]})
    with pytest.raises(CpiError, match=r"lora.target_modules: 'q_proj' does not exist in GPTNeoXForCausalLM "
                                       r"\(candidates: .*query_key_value"):
        run_finetune(cfg)
    assert _steps(tmp_path / "bad") == []


# --------------------------------------------------------------------------- resume / interrupt / non-finite


def _callback(event: str, fn):
    from transformers import TrainerCallback

    cb = TrainerCallback()
    setattr(cb, event, fn)
    return cb


def test_sigint_saves_then_resume_matches_uninterrupted_run(env, tmp_path):
    import torch

    from fullscale.finetune import FinetuneInterrupted, run_finetune

    ref = run_finetune(base_config(env["llama"], env["data"], tmp_path / "ref", max_steps=6, save_steps=4,
                                   keep_optimizer_states="all"))
    assert (ref / "checkpoint-4/optimizer.pt").is_file() and (ref / "checkpoint-6/optimizer.pt").is_file()

    def send_sigint(args, state, control, **kw):
        if state.global_step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # handled by the guard: finish step 3, save, stop

    cfg = base_config(env["llama"], env["data"], tmp_path / "int", max_steps=6, save_steps=4)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(FinetuneInterrupted, match=r"interrupted by SIGINT at step 3; saved .*interrupted-checkpoint-3"):
        run_finetune(cfg, callbacks=[_callback("on_step_end", send_sigint)])
    assert signal.getsignal(signal.SIGINT) is handler_before
    # step 3 is off the save_steps=4 cadence: a resume point, not a trajectory checkpoint
    assert _steps(cfg.output_dir and tmp_path / "int") == []
    state = json.loads((tmp_path / "int/interrupted-checkpoint-3/trainer_state.json").read_text())
    assert state["global_step"] == 3
    run_finetune(cfg)  # resume
    assert _steps(tmp_path / "int") == [4, 6]  # the same steps as the uninterrupted run
    assert not (tmp_path / "int/interrupted-checkpoint-3").exists()  # superseded, removed
    state = json.loads((tmp_path / "int/checkpoint-6/trainer_state.json").read_text())
    assert state["global_step"] == 6
    a, b = _weights(ref / "checkpoint-6"), _weights(tmp_path / "int/checkpoint-6")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_log_schedule_saves_at_doubling_steps_and_resumes_on_it(env, tmp_path):
    """save_schedule: log checkpoints at save_steps x 1, 2, 4, ... and the final step; an interrupt at
    step 6 (on the linear cadence of 2, off the log one) is a resume point only."""
    from fullscale.finetune import FinetuneInterrupted, run_finetune

    def send_sigint(args, state, control, **kw):
        if state.global_step == 6:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = base_config(env["llama"], env["data"], tmp_path / "log", max_steps=10, save_steps=2, save_schedule="log")
    with pytest.raises(FinetuneInterrupted, match=r"at step 6; saved .*interrupted-checkpoint-6"):
        run_finetune(cfg, callbacks=[_callback("on_step_end", send_sigint)])
    assert _steps(tmp_path / "log") == [2, 4]
    run_finetune(cfg)  # resume: the same schedule, then the final step
    assert _steps(tmp_path / "log") == [2, 4, 8, 10]
    assert not (tmp_path / "log/interrupted-checkpoint-6").exists()


def test_save_schedule_is_validated_and_changes_no_number(tmp_path):
    from cpi.errors import ConfigError
    from fullscale.finetune import FinetuneConfig, resume_differences

    with pytest.raises(ConfigError, match="field 'save_schedule': 'cubic' is not one of 'linear', 'log'"):
        FinetuneConfig.from_dict({"base_model": "b", "data": "d", "output_dir": "o", "save_schedule": "cubic"})
    cfg = FinetuneConfig(base_model="b", data="d", output_dir="o", save_steps=5)
    assert [s for s in range(1, 41) if cfg.is_save_step(s)] == [5, 10, 15, 20, 25, 30, 35, 40]
    log_cfg = cfg.replace(save_schedule="log")
    assert [s for s in range(1, 41) if log_cfg.is_save_step(s)] == [5, 10, 20, 40]
    segment = {"config": cfg.to_dict(), "inputs": {}, "dtype": "float32"}
    assert resume_differences(segment, log_cfg, {}, dtype="float32") == []


def test_crash_while_saving_leaves_no_partial_checkpoint(env, tmp_path, monkeypatch):
    from fullscale.finetune import run_finetune
    from fullscale.trainer import CpiTrainer as trainer_cls

    real = trainer_cls.__mro__[1]._save_optimizer_and_scheduler
    calls = {"n": 0}

    def crash_on_second_save(self, output_dir):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full (simulated)")
        return real(self, output_dir)

    monkeypatch.setattr(trainer_cls, "_save_optimizer_and_scheduler", crash_on_second_save)
    cfg = base_config(env["llama"], env["data"], tmp_path / "crash", max_steps=6)
    with pytest.raises(RuntimeError, match="disk full"):
        run_finetune(cfg)
    out = tmp_path / "crash"
    assert _steps(out) == [2]  # checkpoint-4 never became visible
    assert (out / ".tmp-checkpoint-4").is_dir()  # the half-written save is only in staging
    monkeypatch.undo()
    run_finetune(cfg)
    assert _steps(out) == [2, 4, 6] and not (out / ".tmp-checkpoint-4").exists()
    assert json.loads((out / "finetune_config.json").read_text())["meta"]["resumed_from"] == "checkpoint-2"


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(env, tmp_path):
    import torch

    from fullscale.finetune import NonFiniteLossError, run_finetune

    def poison(args, state, control, model=None, **kw):
        if state.global_step == 3:  # step 4 is about to run: corrupt a weight -> the loss becomes NaN
            with torch.no_grad():
                model.model.embed_tokens.weight[:] = float("nan")

    cfg = base_config(env["llama"], env["data"], tmp_path / "nan", max_steps=6)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 4 .*last good checkpoint: .*checkpoint-2"):
        run_finetune(cfg, callbacks=[_callback("on_step_begin", poison)])
    assert _steps(tmp_path / "nan") == [2]
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "nan/checkpoint-2").values())


def test_diverging_learning_rate_is_caught(env, tmp_path):
    import torch

    from fullscale.finetune import NonFiniteLossError, run_finetune

    cfg = base_config(env["llama"], env["data"], tmp_path / "div", max_steps=40, save_steps=1, learning_rate=1e8,
                      max_grad_norm=0.0)
    with pytest.raises(NonFiniteLossError, match="non-finite (loss|gradient) at step"):
        run_finetune(cfg)
    steps = _steps(tmp_path / "div")
    assert steps and steps[-1] < 40
    for s in steps:
        assert all(torch.isfinite(v).all() for v in _weights(tmp_path / f"div/checkpoint-{s}").values())


# --------------------------------------------------------------------------- tracking, mitigations, CLI


@pytest.mark.parametrize("schedule", ["linear", "log"])
def test_tracking_logs_reliance_and_keeps_best(env, tmp_path, schedule):
    """The best-reliance checkpoint is saved off the save schedule, whichever schedule (the schedule never
    vetoes another callback's save)."""
    import pandas as pd

    from fullscale.finetune import run_finetune

    conflicts = write_jsonl(tmp_path / "conf.jsonl", conflict_records())
    cfg = base_config(env["llama"], env["data"], tmp_path / "track", max_steps=6, save_steps=6, save_schedule=schedule,
                      tracking={"conflicts": [str(conflicts)], "n_items": 6, "every_steps": 2, "keep_best": True})
    out = run_finetune(cfg)
    rel = pd.read_csv(out / "reliance.csv")
    assert rel["step"].tolist() == [0, 2, 4, 6] and (rel["n"] == 6).all()
    assert rel["mean_reliance"].between(0, 1).all()
    items = pd.read_csv(out / "reliance_items.csv")
    assert len(items) == 24 and set(items["step"]) == {0, 2, 4, 6}
    best = json.loads((out / "best_reliance.json").read_text())
    trained = rel[rel["step"] > 0]
    assert best["step"] == int(trained.loc[trained["mean_reliance"].idxmax(), "step"])
    assert (out / best["checkpoint"]).is_dir() and best["step"] in _steps(out)


def test_filter_and_augment_in_the_run(env, tmp_path):
    from fullscale.finetune import run_finetune

    conflicts = write_jsonl(tmp_path / "conf.jsonl", conflict_records())
    cfg = base_config(env["llama"], env["data"], tmp_path / "mit", max_steps=2, filter_fraction=0.25,
                      filter_method="loss", augment_fraction=0.2, augment_sources=[str(conflicts)])
    out = run_finetune(cfg)
    summary = json.loads((out / "data_summary.json").read_text())
    assert summary["n_filtered_out"] == 2  # 25% of the 8 examples that have a context
    assert summary["n_augmented"] == 4  # 20% of 14 + 4 = 18
    assert summary["n_train"] == 18
    scores = out / "curation_scores.csv"
    assert scores.is_file()
    # the same filter from a saved score table (what `cpi data score-context` writes)
    out2 = run_finetune(cfg.replace(output_dir=str(tmp_path / "mit2"), filter_scores=str(scores),
                                    augment_fraction=0.0))
    assert json.loads((out2 / "data_summary.json").read_text())["n_train"] == 14


def test_cli_finetune(env, tmp_path, capsys):
    import yaml

    from cpi.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": str(env["llama"]), "data": str(env["data"]),
                                   "output_dir": str(tmp_path / "cli"), "max_steps": 4, "save_steps": 2,
                                   "per_device_batch_size": 4, "gradient_accumulation_steps": 1}))
    assert main(["finetune", "--config", str(cfg), "--set", "max_steps=2", "--set", "learning_rate=1e-3"]) == 0
    assert _steps(tmp_path / "cli") == [2]
    assert main(["finetune", "--config", str(cfg), "--set", "template=vicuna"]) == 2
    assert "known templates: plain, alpaca, chat" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "a"}])
    assert main(["finetune", "--config", str(cfg), "--set", f"data={bad}", "--set", "resume=true"]) == 2
    assert "resuming with changed data" in capsys.readouterr().err  # another data file: refused before reading it
    assert main(["finetune", "--config", str(cfg), "--set", f"data={bad}", "--set",
                 f"output_dir={tmp_path / 'fresh'}"]) == 2
    assert "bad.jsonl:1: missing 'output'" in capsys.readouterr().err
    assert not (tmp_path / "fresh").exists()  # a failed command leaves no folder behind


@pytest.mark.slow
def test_sigterm_to_cli_process_then_resume(env, tmp_path):
    """A real `cpi finetune` process gets SIGTERM mid-run: exit code 130, every visible checkpoint is
    complete, no staging folder is left, and a second run resumes from the last checkpoint."""
    import subprocess
    import sys
    import time

    import yaml

    from fullscale.finetune import is_complete_checkpoint, list_checkpoints, list_interrupted

    out = tmp_path / "term"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": str(env["llama"]), "data": str(env["data"]), "output_dir": str(out),
                                   "max_steps": 100000, "save_steps": 5, "per_device_batch_size": 4,
                                   "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "max_seq_length": 256}))
    repo = Path(__file__).parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "cpi.cli", "finetune", "--config", str(cfg)], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-10").is_dir():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted by SIGTERM at step" in err
    steps = list_checkpoints(out)
    assert len(steps) >= 2 and all(is_complete_checkpoint(p) for _, p in steps)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    # the signal may land a few steps after checkpoint-10 (an interrupted-checkpoint-<step> resume point)
    last = max(step for step, _ in steps + list_interrupted(out))
    from cpi.cli import main

    assert main(["finetune", "--config", str(cfg), "--set", f"max_steps={last + 2}", "--set",
                 "force_resume=true"]) == 0
    assert list_checkpoints(out)[-1][0] == last + 2
    state = json.loads((out / f"checkpoint-{last + 2}/trainer_state.json").read_text())
    assert state["global_step"] == last + 2


@pytest.mark.slow
def test_torchrun_two_process_ddp_on_cpu(env, tmp_path):
    """The same code under `torchrun --nproc_per_node 2` (gloo DDP on CPU): one shared run, per-rank RNG
    states in each checkpoint, and twice the examples per optimizer step."""
    import shutil
    import subprocess

    import yaml

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    out = tmp_path / "ddp"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": str(env["llama"]), "data": str(env["data"]), "output_dir": str(out),
                                   "max_steps": 4, "save_steps": 2, "per_device_batch_size": 4,
                                   "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "max_seq_length": 256}))
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "cpi.cli", "finetune", "--config", str(cfg)],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [str(out)]  # printed by rank 0 only
    assert _steps(out) == [2, 4]
    ck = out / "checkpoint-4"
    assert (ck / "rng_state_0.pth").is_file() and (ck / "rng_state_1.pth").is_file()
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and state["epoch"] == pytest.approx(4 * 2 * 4 / 16)


@pytest.mark.slow
def test_an_interrupt_on_the_final_step_still_ends_in_a_regular_checkpoint(env, tmp_path):
    """SIGTERM that lands on step == max_steps (off the save cadence) leaves interrupted-checkpoint-<max_steps>;
    the rerun has nothing to train, and the final step must still appear as checkpoint-<max_steps>, as in an
    uninterrupted run (here the interrupt resume point is made by renaming the finished run's final checkpoint)."""
    from fullscale.finetune import list_checkpoints, list_interrupted, run_finetune

    cfg = base_config(env["llama"], env["data"], tmp_path / "run", max_steps=6, save_steps=4)
    out = run_finetune(cfg)
    assert [s for s, _ in list_checkpoints(out)] == [4, 6]
    (out / "checkpoint-6").rename(out / "interrupted-checkpoint-6")
    assert [s for s, _ in list_checkpoints(out)] == [4]
    run_finetune(cfg)
    assert [s for s, _ in list_checkpoints(out)] == [4, 6] and list_interrupted(out) == []
    assert json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("order", ["sequential", "shuffle"])
def test_data_order_sequential_trains_in_file_order(tmp_path, order):
    """data_order=sequential feeds the records in the data file's order (a curriculum); shuffle does not."""
    from transformers import TrainerCallback

    from fullscale.finetune import run_finetune
    from tests.fullscale.ft_helpers import alpaca_records, base_config, make_base, write_jsonl

    recs = alpaca_records(8)
    for i, r in enumerate(recs):            # record i answers with i + 1 words: its length marks its place
        r["input"], r["output"] = "", " ".join(["Paris"] * (i + 1))
    data = write_jsonl(tmp_path / "ift.jsonl", recs)
    seen: list[int] = []

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            for batch in train_dataloader:
                seen.extend(int(n) for n in (batch["labels"] != -100).sum(dim=1))

    cfg = base_config(make_base(tmp_path), data, tmp_path / "out", max_steps=8, save_steps=8,
                      per_device_batch_size=1, data_order=order)
    run_finetune(cfg, callbacks=[Record()])
    assert len(seen) == 8
    assert (seen == sorted(seen)) == (order == "sequential"), seen
