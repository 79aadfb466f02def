"""The results-folder lock: one writer, the holder's PID named, stale locks taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpi.errors import LockedError
from cpi.lock import LOCK_NAME, FolderLock

REPO = Path(__file__).parents[2]


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes the lock on ``folder`` and sleeps; returns once it holds it."""
    code = ("import sys, time\nfrom cpi.lock import FolderLock\n"
            f"with FolderLock({str(folder)!r}, 'cpi test-holder'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_gets_the_holders_pid_then_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "res"
    proc = hold_lock(out)
    try:
        with pytest.raises(LockedError, match=rf"in use by another process \(PID {proc.pid}, cpi test-holder"):
            FolderLock(out, "cpi evaluate").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)  # killed: its lock file stays behind, naming a dead PID
        proc.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid
    with FolderLock(out, "cpi evaluate"):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


def test_lock_is_reentrant_and_a_created_empty_folder_is_removed(tmp_path):
    out = tmp_path / "a" / "b"
    with FolderLock(out):
        with FolderLock(out):  # the same process again (cpi run -> its stages)
            assert (out / LOCK_NAME).is_file()
        assert (out / LOCK_NAME).is_file()
    assert not (tmp_path / "a").exists()  # nothing was written: the folders the lock made are gone
    with FolderLock(out):
        (out / "result.csv").write_text("x\n")
    assert (out / "result.csv").is_file() and not (out / LOCK_NAME).exists()


def test_lock_released_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with FolderLock(tmp_path / "x"):
            raise RuntimeError("boom")
    with FolderLock(tmp_path / "x"):
        pass
    time.sleep(0)
