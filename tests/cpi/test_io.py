"""Atomic writes and run metadata."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cpi import io


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    io.atomic_write_text(target, "old\n")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(OSError):
        io.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"], "no temporary file may be left behind"


def test_save_run_writes_tables_config_and_metadata(tmp_path):
    table = pd.DataFrame({"step": [0, 1], "M_C": [0.5, 0.7]})
    io.save_run(tmp_path / "out", {"eta": 1.0}, tables={"trajectory": table}, seeds=[0])
    back = pd.read_csv(tmp_path / "out" / "trajectory.csv")
    pd.testing.assert_frame_equal(back, table)
    meta = json.loads((tmp_path / "out" / "config.json").read_text())
    assert meta["config"] == {"eta": 1.0}
    assert meta["meta"]["package"] == io.PACKAGE_NAME
    assert meta["meta"]["version"]
    assert "git_hash" in meta["meta"] and meta["meta"]["seeds"] == [0]


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = io.atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o644
