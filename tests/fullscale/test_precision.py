"""One precision setting: ``dtype: auto | float32 | bfloat16`` resolved per device, with the float32 fallback
forced through ``CPI_CPU_BF16`` so that nothing here depends on the CPU's bf16 instructions."""

from __future__ import annotations

import pytest

from cpi.errors import ConfigError


def test_cpu_bf16_flags_and_forced_answer(monkeypatch):
    from fullscale.precision import cpu_has_bf16

    monkeypatch.delenv("CPI_CPU_BF16", raising=False)
    assert cpu_has_bf16(["avx2", "amx_bf16", "amx_tile"])
    assert cpu_has_bf16(["avx512f", "avx512_bf16"])
    assert not cpu_has_bf16(["avx2", "avx512f", "avx512_vnni"])
    monkeypatch.setenv("CPI_CPU_BF16", "0")
    assert not cpu_has_bf16(["amx_bf16"])
    monkeypatch.setenv("CPI_CPU_BF16", "1")
    assert cpu_has_bf16([])
    monkeypatch.setenv("CPI_CPU_BF16", "yes")
    with pytest.raises(ConfigError, match="CPI_CPU_BF16"):
        cpu_has_bf16()


@pytest.mark.parametrize("has_bf16, want", [("1", "bfloat16"), ("0", "float32")])
def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch, has_bf16, want):
    from fullscale.precision import dtype_name, resolve_dtype

    monkeypatch.setenv("CPI_CPU_BF16", has_bf16)
    assert dtype_name(resolve_dtype("auto", "cpu")) == want
    assert dtype_name(resolve_dtype(None, "cpu")) == want
    assert dtype_name(resolve_dtype("float32", "cpu")) == "float32"
    assert dtype_name(resolve_dtype("fp32", "cpu")) == "float32"


def test_unsupported_dtypes_are_one_line_errors_naming_the_field(monkeypatch):
    import torch

    from fullscale.precision import resolve_dtype

    monkeypatch.setenv("CPI_CPU_BF16", "0")
    with pytest.raises(ConfigError, match=r"^field 'dtype': bfloat16 is not supported here \(this CPU"):
        resolve_dtype("bfloat16", "cpu")
    with pytest.raises(ConfigError, match=r"^field 'eval.dtype': float16 is not supported on the CPU"):
        resolve_dtype("float16", "cpu", field="eval.dtype")
    with pytest.raises(ConfigError, match=r"^field 'dtype': unknown dtype 'int8'"):
        resolve_dtype("int8", "cpu")
    monkeypatch.setenv("CPI_CPU_BF16", "1")
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_finetune_config_has_one_dtype_and_refuses_the_old_names(tmp_path):
    from fullscale.finetune import FinetuneConfig

    kw = dict(base_model="m", data="d.jsonl", output_dir="out")
    assert FinetuneConfig(**kw).dtype == "auto"
    for old in ({"precision": "bf16"}, {"model_dtype": "bfloat16"}):
        with pytest.raises(ConfigError, match=f"field '{next(iter(old))}': replaced by 'dtype'"):
            FinetuneConfig.from_dict({**kw, **old})
    with pytest.raises(ConfigError, match="field 'precision': replaced by 'dtype'"):
        FinetuneConfig(**kw).with_overrides(["precision=fp32"])
    path = tmp_path / "ft.yaml"
    path.write_text("base_model: m\ndata: d.jsonl\noutput_dir: out\nprecision: fp32\n")
    with pytest.raises(ConfigError, match=rf"{path}: field 'precision': replaced by 'dtype'"):
        FinetuneConfig.from_file(path)


def test_cli_float16_on_the_cpu_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    from cpi.cli import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "q", "output": "a"}\n')
    code = main(["finetune", "--base-model", str(tmp_path), "--data", str(data), "--output-dir",
                 str(tmp_path / "out"), "--dtype", "float16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "field 'dtype': float16 is not supported on the CPU" in err
    assert not (tmp_path / "out").exists()
