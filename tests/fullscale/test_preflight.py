"""``cpi finetune`` checks every setting before any model load, scoring or writing (fullscale.preflight).

Each bad setting below used to be refused only after the base model was loaded (and, for
``tracking.conflicts`` and ``report_to``, after ``finetune_config.json`` was written; ``optim`` gave a
traceback). Here loading the model is an assertion failure: the refusal must come first.
"""

from __future__ import annotations

import pytest
import yaml

from tests.fullscale.ft_helpers import alpaca_records, corpus, write_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.tiny_models import make_tiny_checkpoint, make_tokenizer

    root = tmp_path_factory.mktemp("preflight")
    base = make_tiny_checkpoint(root / "base", "llama", tokenizer=make_tokenizer("bpe", corpus=corpus()))
    data = write_jsonl(root / "ift.jsonl", alpaca_records(8))
    bad_table = root / "scores.csv"
    bad_table.write_text("a,b\n1,2\n")
    cfg = {"base_model": str(base), "data": str(data), "output_dir": str(root / "out"), "max_steps": 2,
           "save_steps": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_seq_length": 128,
           "dtype": "float32"}
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    return {"root": root, "base": base, "data": data, "bad_table": bad_table, "cfg": cfg,
            "missing": _without_layer(base, root / "missing"), "mismatch": _wider(base, root / "mismatch")}


def _without_layer(base, dst):
    """A copy of ``base`` whose checkpoint lacks every weight of layer 1 (its config still has the layer)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(base, dst)
    tensors = {k: v for k, v in load_file(dst / "model.safetensors").items() if ".layers.1." not in k}
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _wider(base, dst):
    """A copy of ``base`` whose config.json asks for a wider MLP than its weights have."""
    import json
    import shutil

    shutil.copytree(base, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["intermediate_size"] *= 2
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _no_model_load(*args, **kwargs):
    raise AssertionError("the base model was loaded before the bad setting was refused")


CASES = [
    ("optim", ["optim=adamw_nonexistent"], "field 'optim': unknown optimizer 'adamw_nonexistent'"),
    ("report-to", ["report_to=[nosuchtracker]"], "field 'report_to': unknown integration 'nosuchtracker'"),
    ("tracking-set", ["tracking.conflicts=[NoSuchSet]"], "field 'tracking.conflicts': NoSuchSet"),
    ("augment-source", ["augment_fraction=0.1", "augment_sources=[NoSuchSet]"], "field 'augment_sources': NoSuchSet"),
    ("augment-exclude", ["augment_fraction=0.1", "augment_sources=[CF_World_Facts]", "augment_exclude=[Nope]"],
     "field 'augment_exclude': Nope"),
    ("filter-scores", ["filter_fraction=0.25", "filter_scores={bad_table}"], "lacks column 'example_id'"),
    ("lora-target", ["lora.target_modules=[nope_proj]"], "'nope_proj' does not exist in LlamaForCausalLM"),
    ("chat-template", ["template=chat"], "field 'template': template 'chat' needs a tokenizer with a chat template"),
    ("tracking-chat", ["tracking.template=chat"], "field 'tracking.template': template 'chat'"),
    ("tokenizer-folder", ["tokenizer={root}"], "cannot load"),
    ("data-type", ["data={bad_table}"], "unsupported data file type '.csv'"),
    ("missing-weights", ["base_model={missing}"], "the checkpoint lacks 9 weight(s) of the architecture"),
    ("shape-mismatch", ["base_model={mismatch}"], "gate_proj.weight has shape [64, 32] in the checkpoint but [128, 32] in its config.json"),
]


@pytest.mark.parametrize("name, sets, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_setting_refused_before_the_model_loads(name, sets, needle, setup, monkeypatch, capsys):
    import fullscale.finetune
    from cpi.cli import main

    monkeypatch.setattr(fullscale.finetune, "load_base", _no_model_load)
    argv = ["finetune", "--config", str(setup["root"] / "run.yaml")]
    for s in sets:
        argv += ["--set", s.format(**setup)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cpi: error: ") and needle in err[0], err
    assert not (setup["root"] / "out").exists()


def test_good_settings_pass_without_loading_weights(setup, monkeypatch):
    """LoRA on existing modules, QK-only, tracking and augmentation from shipped sets: no complaint."""
    import fullscale.finetune_model
    from fullscale.finetune import FinetuneConfig
    from fullscale.preflight import check_finetune_settings

    monkeypatch.setattr(fullscale.finetune_model, "load_base", _no_model_load)
    base = FinetuneConfig(**setup["cfg"])
    check_finetune_settings(base.with_overrides(["lora.target_modules=[q_proj, v_proj]"]))
    check_finetune_settings(base.replace(qk_only=True, report_to=("none",), optim="sgd"))
    check_finetune_settings(base.with_overrides(["tracking.conflicts=[CF_Bio]", "augment_fraction=0.1",
                                                 "augment_sources=[CF_World_Facts]"]))
    # a hub name that is not on this machine is left to the run (it needs the network)
    check_finetune_settings(base.replace(base_model="org/not-on-disk", lora=None))
