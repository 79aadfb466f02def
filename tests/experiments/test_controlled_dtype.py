"""``ControlledConfig.dtype``: ``auto`` resolved once per machine (bf16 only where the CPU reports it:
forced with ``CPI_CPU_BF16`` here), the resolved dtype in every stage, in ``controlled_config.json`` and in
every stage's content key -- float32 stages keep the keys they had before the field existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpi.cli import main
from cpi.errors import ConfigError
from experiments.controlled.config import ControlledConfig
from experiments.controlled.keys import content_key, dtype_parts
from tests.experiments.test_controlled import tiny_config
from tests.tiny_models import make_tiny_checkpoint


def test_float32_leaves_every_key_as_it_was_and_bf16_gets_its_own():
    from experiments.controlled.config import TrainSettings

    # a6c7f2c553b9: the default finetune folder's key pinned before the field existed (test_controlled.py)
    assert content_key("fp0", "datakey0", TrainSettings(), 0, *dtype_parts("float32")) == "a6c7f2c553b9"
    assert content_key("fp0", "datakey0", TrainSettings(), 0, *dtype_parts("bfloat16")) != "a6c7f2c553b9"
    assert dtype_parts("float32") == () and dtype_parts("bfloat16") == ({"dtype": "bfloat16"},)


@pytest.mark.parametrize("has_bf16, want", [("0", "float32"), ("1", "bfloat16")])
def test_auto_resolves_per_machine_and_reaches_finetuning_and_the_regime(monkeypatch, has_bf16, want):
    from experiments.controlled.regime_run import RegimeConfig

    monkeypatch.setenv("CPI_CPU_BF16", has_bf16)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cfg = ControlledConfig()
    assert cfg.dtype == "auto" and cfg.resolved_dtype() == want
    assert cfg.finetune_config("m", Path("d.jsonl"), Path("o"), 0).dtype == want
    assert cfg.replace(dtype="float32").finetune_config("m", Path("d.jsonl"), Path("o"), 0).dtype == "float32"
    assert RegimeConfig(experiment=cfg).resolved_dtype() == want  # follows the experiment's (one home: --dtype)
    assert RegimeConfig(experiment=cfg.replace(dtype="float32")).resolved_dtype() == "float32"


def test_unsupported_precisions_are_one_line_errors_naming_the_field(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CPI_CPU_BF16", "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match=r"^field 'dtype': 'float16' is not one of auto, float32, bfloat16"):
        ControlledConfig(dtype="float16")
    with pytest.raises(ConfigError, match=r"^field 'dtype': bfloat16 is not supported here"):
        ControlledConfig(dtype="bfloat16").resolved_dtype()
    for value, said in (("bfloat16", "field 'dtype': bfloat16 is not supported here"),
                        ("float16", "field 'dtype': 'float16' is not one of")):
        out = tmp_path / f"run-{value}"
        code = main(["controlled", "run", "--quick", "--set", f"dtype={value}", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and said in err, err
        assert not out.exists()


@pytest.mark.slow
def test_a_bf16_run_has_its_own_stage_folders_and_records_its_dtype(tmp_path, bf16_allowed):
    from experiments.controlled.experiment import run_controlled

    model = make_tiny_checkpoint(tmp_path / "model", "llama", tokenizer_kind="bpe")
    runs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = tiny_config(model, seeds=(0,), dtype=dtype, knowledge_cache=str(tmp_path / "knowledge"))
        runs[dtype] = run_controlled(cfg, tmp_path / "run")  # one folder: the stages must not mix
    out = tmp_path / "run"
    assert json.loads((out / "controlled_config.json").read_text())["meta"]["dtype"] == "bfloat16"
    for stage in ("finetune-*", "eval-*", "probe-*"):
        assert len(list((out / "seed-0").glob(stage))) == 2, stage  # one per dtype
    assert len(list((out / "seed-0").glob("data-*"))) == 1  # the mixture does not depend on it
    assert len(list((tmp_path / "knowledge").iterdir())) == 2
    ft = [json.loads(p.read_text())["dtype"] for p in (out / "seed-0").glob("finetune-*/finetune_config.json")]
    assert sorted(ft) == ["bfloat16", "float32"]
    evals = {json.loads((p / "config.json").read_text())["meta"]["dtype"] for p in (out / "seed-0").glob("eval-*")}
    assert evals == {"torch.float32", "torch.bfloat16"}
    a, b = (runs[d].items.sort_values(["step", "item_id"]).reset_index(drop=True) for d in ("float32", "bfloat16"))
    assert list(a["item_id"]) == list(b["item_id"])
    assert 0 < (a["m_c"] - b["m_c"]).abs().max() < 0.5  # ran in bf16: near float32, not equal
