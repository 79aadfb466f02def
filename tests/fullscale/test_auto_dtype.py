"""``dtype: auto`` in the evaluation: bf16 where the CPU reports native bf16 (forced here with
``CPI_CPU_BF16``, so nothing depends on this machine), float32 otherwise; the resolved dtype is recorded
and keys the results (a bf16 result never resumes into a float32 folder); refusals exit 2 writing nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi.cli import main
from cpi.errors import CpiError
from fullscale.conflicts import items_to_jsonl
from fullscale.evaluate import EvalConfig, evaluate_trajectory, load_results
from tests.fullscale.evalkit import one_torch_thread, sample_items
from tests.tiny_models import make_tiny_checkpoint

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    data = items_to_jsonl(sample_items(4), root / "items.jsonl")
    make_tiny_checkpoint(root / "run" / "checkpoint-5", arch="llama", seed=1)
    return root / "run", data


def _config(setup, out, **kw):
    run, data = setup
    return EvalConfig(checkpoints=(str(run),), datasets=(str(data),), out=str(out), modes=("logprob",),
                      n_boot=20, batch_size=4, plot=False, **kw)


def test_auto_evaluates_in_bf16_only_where_the_cpu_has_it_and_never_mixes(setup, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("CPI_CPU_BF16", "0")  # the fallback: auto is float32
    evaluate_trajectory(_config(setup, out))
    assert json.loads((out / "config.json").read_text())["meta"]["dtype"] == "torch.float32"
    f32, _ = load_results(out)
    explicit = evaluate_trajectory(_config(setup, tmp_path / "explicit", dtype="float32"))
    pd.testing.assert_series_equal(f32["margin"], load_results(explicit)[0]["margin"])  # auto = float32, bitwise

    monkeypatch.setenv("CPI_CPU_BF16", "1")  # the same config on a CPU with bf16: another result
    with pytest.raises(CpiError, match="checkpoint-5: differ in settings or dataset contents|differ in settings"):
        evaluate_trajectory(_config(setup, out))
    assert json.loads((out / "config.json").read_text())["meta"]["dtype"] == "torch.float32"  # untouched
    evaluate_trajectory(_config(setup, out, overwrite=True))
    assert json.loads((out / "config.json").read_text())["meta"]["dtype"] == "torch.bfloat16"
    bf, _ = load_results(out)
    diff = (bf["margin"] - f32["margin"]).abs()
    assert 0 < diff.max() < 0.5, diff.tolist()  # it ran in bf16: close to float32, not equal


def test_bfloat16_where_unsupported_and_float16_on_the_cpu_exit_2_writing_nothing(setup, tmp_path, capsys,
                                                                                 monkeypatch):
    run, data = setup
    monkeypatch.setenv("CPI_CPU_BF16", "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for dtype, said in (("bfloat16", "field 'dtype': bfloat16 is not supported here (this CPU has neither"),
                        ("float16", "field 'dtype': float16 is not supported on the CPU")):
        out = tmp_path / f"out-{dtype}"
        code = main(["evaluate", "--checkpoints", str(run), "--datasets", str(data), "--out", str(out),
                     "--dtype", dtype, "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and said in err, err
        assert not out.exists()
    code = main(["evaluate", "--checkpoints", str(run), "--datasets", str(data), "--out", str(tmp_path / "x"),
                 "--dtype", "int8"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "field 'dtype': unknown dtype 'int8'" in err and not (tmp_path / "x").exists()


def test_stops_are_validated_and_key_the_results_only_when_changed(setup):
    from cpi.errors import ConfigError
    from fullscale.evaluate import _fingerprint, _load_datasets
    from fullscale.matching import DEFAULT_STOPS

    with pytest.raises(ConfigError, match=r"^field 'stops': give one or more non-empty strings"):
        EvalConfig(checkpoints=("x",), stops=())
    with pytest.raises(ConfigError, match="field 'stops'"):
        EvalConfig(checkpoints=("x",), stops=("\n", ""))
    base = _config(setup, "unused")
    data = _load_datasets(base)
    fp = _fingerprint(base, data, "torch.float32")
    assert _fingerprint(base.replace(stops=DEFAULT_STOPS), data, "torch.float32") == fp
    assert _fingerprint(base.replace(stops=DEFAULT_STOPS + ("\n",)), data, "torch.float32") != fp
    assert _fingerprint(base, data, "torch.bfloat16") != fp
