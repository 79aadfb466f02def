"""The probe's dtype: ``auto`` resolved (bf16 only where the CPU reports it: forced with ``CPI_CPU_BF16``
here), recorded in config.json and in the run fingerprint; float32 runs keep the fingerprints they had
(folders made before ``auto`` could mean bf16 resume); a bf16 run never resumes into a float32 folder."""

from __future__ import annotations

import json

import pytest

from cpi.errors import CpiError
from mechinterp.trajectory import ProbeConfig, _run_fingerprint, probe_trajectory
from tests.fullscale.evalkit import sample_items
from tests.mechinterp.helpers import conflict_items, make_trajectory


def test_float32_fingerprints_are_those_of_before_auto_and_bf16_has_its_own():
    items = sample_items(3)
    # the values the fingerprint had before this change (computed with that code): default and bf16 folders resume
    assert _run_fingerprint(ProbeConfig(), items, "float32") == "06914e6da6cac371"
    assert _run_fingerprint(ProbeConfig(dtype="bfloat16"), items, "bfloat16") == "f1417c3ba9524f9d"
    # auto resolved to bf16 is the bf16 run, not the float32 one
    assert _run_fingerprint(ProbeConfig(), items, "bfloat16") == "f1417c3ba9524f9d"
    assert _run_fingerprint(ProbeConfig(dtype="float32"), items, "float32") == "06914e6da6cac371"


def test_a_bf16_probe_never_resumes_into_a_float32_folder(tmp_path, monkeypatch):
    run = make_trajectory(tmp_path / "run", "llama", steps=(10,))
    items, out = conflict_items(2), tmp_path / "out"
    monkeypatch.setenv("CPI_CPU_BF16", "0")
    probe_trajectory(str(run), items, out, batch_size=2)
    assert json.loads((out / "config.json").read_text())["meta"]["dtype"] == "float32"
    probe_trajectory(str(run), items, out, batch_size=2, dtype="float32")  # the same run: resumes
    monkeypatch.setenv("CPI_CPU_BF16", "1")
    with pytest.raises(CpiError, match=r"already holds a probe run with different dtype \(dtype='float32'\)"):
        probe_trajectory(str(run), items, out, batch_size=2)
    bf = probe_trajectory(str(run), items, tmp_path / "bf16", batch_size=2)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["meta"]["dtype"] == "bfloat16"
    assert len(bf)


def test_a_folder_made_before_the_dtype_was_recorded_resumes_in_float32(tmp_path, monkeypatch):
    run = make_trajectory(tmp_path / "run", "llama", steps=(10,))
    items, out = conflict_items(2), tmp_path / "out"
    monkeypatch.setenv("CPI_CPU_BF16", "0")
    probe_trajectory(str(run), items, out, batch_size=2)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["meta"]["dtype"]  # as written before this change
    (out / "config.json").write_text(json.dumps(cfg))
    before = (out / "parts" / "checkpoint-10.csv").stat().st_mtime_ns
    probe_trajectory(str(run), items, out, batch_size=2, dtype="float32")
    assert (out / "parts" / "checkpoint-10.csv").stat().st_mtime_ns == before  # reused, not recomputed
    monkeypatch.setenv("CPI_CPU_BF16", "1")
    with pytest.raises(CpiError, match="different dtype"):
        probe_trajectory(str(run), items, out, batch_size=2)
