"""Trajectory evaluation (fullscale.evaluate, cli_evaluate, plots): outputs, resume, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cpi.cli import main
from cpi.errors import CpiError
from fullscale.conflicts import items_to_jsonl
from fullscale.evaluate import EvalConfig, evaluate_trajectory, load_results
from tests.fullscale.evalkit import one_torch_thread, quote_item, sample_items
from tests.tiny_models import make_tiny_checkpoint

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)

FAST = dict(max_new_tokens=4, n_boot=50, batch_size=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    a = items_to_jsonl(sample_items(5, dataset="CF_Small"), root / "small.jsonl")
    q = items_to_jsonl([quote_item(f"q{i}") for i in range(2)], root / "quotes.jsonl")
    return a, q


def _run_dir(root, steps=(0, 10, 20), arch="llama"):
    for s in steps:
        make_tiny_checkpoint(root / f"checkpoint-{s}", arch=arch, seed=s)
    return root


def _check_items(items, ckpt_names, n_items):
    assert len(items) == len(ckpt_names) * n_items
    assert not items.duplicated(["checkpoint", "dataset", "item_id"]).any()
    assert list(dict.fromkeys(items["checkpoint"])) == list(ckpt_names)


def test_end_to_end_tables_config_and_plot(tmp_path, data):
    run = _run_dir(tmp_path / "run")
    out = evaluate_trajectory(EvalConfig(checkpoints=(str(run),), datasets=tuple(map(str, data)),
                                         out=str(tmp_path / "out"), **FAST))
    items, summary = load_results(out)
    _check_items(items, ["checkpoint-0", "checkpoint-10", "checkpoint-20"], 7)
    for col in ("step", "checkpoint", "dataset", "item_id", "category", "prompt", "output", "cf_correct",
                "param_correct", "outcome", "logp_context", "logp_parametric", "margin", "reliance",
                "cb_output", "knows_parametric"):
        assert col in items, col
    assert sorted(items["step"].unique()) == [0, 10, 20]
    # summary: per checkpoint x dataset x category, plus ALL; its numbers come from the item rows
    assert set(summary["category"]) == {"capital", "city", "quote", "ALL"}
    for _, row in summary.iterrows():
        sel = items[(items["checkpoint"] == row["checkpoint"]) & (items["dataset"] == row["dataset"])]
        if row["category"] != "ALL":
            sel = sel[sel["category"] == row["category"]]
        assert row["n"] == len(sel)
        assert row["cf_acc"] == pytest.approx(sel["cf_correct"].astype(float).mean())
        assert row["mean_margin"] == pytest.approx(sel["margin"].mean())
        assert row["cf_acc_lo"] <= row["cf_acc"] + 1e-12 and row["cf_acc"] <= row["cf_acc_hi"] + 1e-12
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["template"] == "alpaca" and "git_hash" in cfg["meta"]
    assert [c["step"] for c in cfg["meta"]["checkpoints"]] == [0, 10, 20]
    assert (out / "inversion.png").stat().st_size > 1000
    # same inputs, same numbers
    again = evaluate_trajectory(EvalConfig(checkpoints=(str(run),), datasets=tuple(map(str, data)),
                                           out=str(tmp_path / "out2"), **FAST))
    items2, _ = load_results(again)
    pd.testing.assert_series_equal(items["margin"], items2["margin"])
    assert list(items["output"].fillna("")) == list(items2["output"].fillna(""))


def test_resume_after_failure_loses_and_duplicates_nothing(tmp_path, data):
    run = _run_dir(tmp_path / "run")
    bad = run / "checkpoint-20" / "model.safetensors"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[:100])  # corrupt the last checkpoint
    cfg = EvalConfig(checkpoints=(str(run),), datasets=(str(data[0]),), out=str(tmp_path / "out"), plot=False,
                     **FAST)
    with pytest.raises(CpiError, match="checkpoint checkpoint-20: corrupt safetensors"):
        evaluate_trajectory(cfg)
    out = tmp_path / "out"
    items = pd.read_csv(out / "items.csv")
    _check_items(items, ["checkpoint-0", "checkpoint-10"], 5)  # the finished checkpoints are kept intact
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "items").iterdir()}
    # an interrupted write: rows of checkpoint-10 present but its completion marker missing
    (out / "items" / "checkpoint-10.json").unlink()
    bad.write_bytes(good_bytes)  # repair, resume
    evaluate_trajectory(cfg)
    items = pd.read_csv(out / "items.csv")
    _check_items(items, ["checkpoint-0", "checkpoint-10", "checkpoint-20"], 5)
    assert (out / "items" / "checkpoint-0.csv").stat().st_mtime_ns == stamps["checkpoint-0.csv"]  # not redone
    assert (out / "items" / "checkpoint-10.csv").stat().st_mtime_ns != stamps["checkpoint-10.csv"]  # redone
    # a third run with nothing left to do changes nothing
    before = (out / "items.csv").read_text()
    evaluate_trajectory(cfg)
    assert (out / "items.csv").read_text() == before
    # other settings in the same folder: refused, unless --overwrite
    with pytest.raises(CpiError, match="different settings"):
        evaluate_trajectory(cfg.replace(template="plain"))
    evaluate_trajectory(cfg.replace(template="plain", overwrite=True))
    items = pd.read_csv(out / "items.csv")
    _check_items(items, ["checkpoint-0", "checkpoint-10", "checkpoint-20"], 5)
    assert set(items["template"]) == {"plain"}


def test_cli_list_of_folders_neox_mistral_and_max_items(tmp_path, data, capsys):
    a = make_tiny_checkpoint(tmp_path / "base", arch="neox")
    b = make_tiny_checkpoint(tmp_path / "ift", arch="mistral")
    code = main(["evaluate", "--checkpoints", f"{a},{b}", "--datasets", str(data[0]), str(data[1]),
                 "--out", str(tmp_path / "out"), "--template", "plain", "--modes", "generate,logprob",
                 "--max-items", "3", "--batch-size", "2", "--max-new-tokens", "3", "--n-boot", "20"])
    assert code == 0
    items, summary = load_results(tmp_path / "out")
    assert list(dict.fromkeys(items["checkpoint"])) == ["base", "ift"]  # given order kept (no steps)
    assert (items.groupby("checkpoint")["dataset"].value_counts() == pd.Series(
        {("base", "CF_Small"): 3, ("base", "CF_Quotes"): 2, ("ift", "CF_Small"): 3, ("ift", "CF_Quotes"): 2}
    ).rename_axis(["checkpoint", "dataset"]).rename("count")).all()
    assert "cb_output" not in items and "margin" in items
    assert "CF_Small" in capsys.readouterr().out


def test_lora_adapter_trajectory(tmp_path, data):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = make_tiny_checkpoint(tmp_path / "base", arch="llama", seed=2)
    for step, seed in [(5, 5), (15, 6)]:
        import torch

        torch.manual_seed(seed)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        m.peft_config["default"].base_model_name_or_path = str(base)
        m.save_pretrained(tmp_path / "lora" / f"checkpoint-{step}")
    out = evaluate_trajectory(checkpoints=(str(tmp_path / "lora"),), datasets=(str(data[0]),),
                              out=str(tmp_path / "out"), modes=("logprob",), plot=False, **FAST)
    items, _ = load_results(out)
    _check_items(items, ["checkpoint-5", "checkpoint-15"], 5)
    a, b = (items[items["step"] == s]["margin"].to_numpy() for s in (5, 15))
    assert abs(a - b).max() > 1e-3  # the two adapters give different models


# --------------------------------------------------------------------------- bad input through the CLI

def _cli(tmp_path, ckpt, dataset, *extra, out="out"):
    return main(["evaluate", "--checkpoints", str(ckpt), "--datasets", str(dataset), "--out",
                 str(tmp_path / out), "--modes", "logprob", "--no-plot", "--n-boot", "10", *extra])


def test_cli_bad_dataset_files(tmp_path, data, capsys):
    ck = make_tiny_checkpoint(tmp_path / "m", arch="llama")
    bad = tmp_path / "bad.jsonl"
    good_line = data[0].read_text().splitlines()[0]
    bad.write_text(good_line + "\n{not json\n")
    assert _cli(tmp_path, ck, bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("cpi: error:") and f"{bad}:2" in err
    rec = json.loads(good_line)
    del rec["parametric_answer"]
    bad.write_text(json.dumps(rec) + "\n")
    assert _cli(tmp_path, ck, bad) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1" in err and "parametric_answer" in err
    assert not (tmp_path / "out" / "items.csv").exists()  # nothing half-written


def test_cli_bad_checkpoints(tmp_path, data, capsys):
    ck = make_tiny_checkpoint(tmp_path / "checkpoint-1", arch="llama", save_tokenizer=False)
    assert _cli(tmp_path, ck, data[0]) == 2
    assert "checkpoint checkpoint-1: no tokenizer" in capsys.readouterr().err
    donor = make_tiny_checkpoint(tmp_path / "donor", arch="llama")
    assert _cli(tmp_path, ck, data[0], "--tokenizer", str(donor)) == 0
    (ck / "model.safetensors").unlink()
    assert _cli(tmp_path, ck, data[0], "--tokenizer", str(donor)) == 0  # already evaluated: resumed, not reloaded
    assert _cli(tmp_path, ck, data[0], "--tokenizer", str(donor), out="out2") == 2
    assert "checkpoint checkpoint-1: no weights" in capsys.readouterr().err
    assert _cli(tmp_path, tmp_path / "missing", data[0]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _cli(tmp_path, donor, data[0], "--template", "chat") == 2
    err = capsys.readouterr().err
    assert "checkpoint donor: item" in err and "chat template" in err


def test_overlong_prompt_is_flagged_in_items(tmp_path):
    ck = make_tiny_checkpoint(tmp_path / "short", arch="llama", max_position_embeddings=90)
    items = sample_items(2)
    long = items[0].__class__(**{**items[0].__dict__, "id": "long",
                                 "context": "The capital of France is Paris. " * 15 + items[0].context})
    path = items_to_jsonl([long, items[1]], tmp_path / "d.jsonl")
    out = evaluate_trajectory(checkpoints=(str(ck),), datasets=(str(path),), out=str(tmp_path / "out"),
                              template="plain", plot=False, **FAST)
    items_t, _ = load_results(out)
    flags = dict(zip(items_t["item_id"], items_t["truncated"]))
    assert bool(flags["long"]) and not bool(flags["CF_Test-1"])


def test_config_validation():
    from cpi.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoints"):
        EvalConfig()
    with pytest.raises(ConfigError, match="modes"):
        EvalConfig(checkpoints=("x",), modes=("judge",))
    with pytest.raises(ConfigError, match="template"):
        EvalConfig(checkpoints=("x",), template="vicuna")


# --------------------------------------------------------------------------- plots and the package

def test_plot_inversion_from_table():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fullscale.plots import plot_inversion, plot_margin

    rows = []
    for ds in ("A", "B"):
        for step, cf in [(0, 0.3), (50, 0.8), (100, 0.4)]:
            rows.append(dict(checkpoint=f"checkpoint-{step}", step=step, dataset=ds, category="ALL", n=10,
                             cf_acc=cf, cf_acc_lo=cf - 0.1, cf_acc_hi=cf + 0.1, param_acc=1 - cf,
                             param_acc_lo=0.9 - cf, param_acc_hi=1.1 - cf, mean_margin=cf - 0.5,
                             mean_margin_lo=cf - 0.6, mean_margin_hi=cf - 0.4))
    table = pd.DataFrame(rows)
    fig = plot_inversion(table)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "A"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "peak 0.80" in texts and "final 0.40" in texts
    plt.close(fig)
    fig, axes = plt.subplots(1, 2)
    assert plot_inversion(table, ax=axes) is fig
    with pytest.raises(ValueError, match="2 datasets"):
        plot_inversion(table, ax=axes[0])
    fig = plot_margin(table)
    ax = fig.axes[0]
    assert ax.get_xlabel() and "log p" in ax.get_ylabel()
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == set(table["dataset"])  # one line per dataset, the table's margins in step order
    for name, line in lines.items():
        d = table[table["dataset"] == name].sort_values("step")
        assert list(line.get_xdata()) == list(d["step"]) and np.allclose(line.get_ydata(), d["mean_margin"])
    plt.close("all")
