"""SIGTERM and SIGINT stop every command the same way: one line, exit code 130."""

from __future__ import annotations

import os
import signal

import pytest

from cpi.errors import EXIT_INTERRUPTED, Interrupted
from cpi.signals import stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_raises_interrupted_and_handlers_come_back(sig):
    before = signal.getsignal(sig)
    with pytest.raises(Interrupted, match=f"interrupted by {sig.name}; finished work is kept; run the same command"):
        with stop_on_signals():
            os.kill(os.getpid(), sig)
            signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None
            for _ in range(1000):
                pass
    assert signal.getsignal(sig) is before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_exit_code_and_one_line(sig, monkeypatch, tmp_path, capsys):
    """`cpi evaluate` (any command) stopped by a signal: exit 130 and one line naming how to resume."""
    import fullscale.evaluate
    from cpi.cli import main

    def killed(*args, **kwargs):
        os.kill(os.getpid(), sig)
        raise AssertionError("the signal should have stopped the command")  # pragma: no cover

    monkeypatch.setattr(fullscale.evaluate, "run_evaluate", killed)
    code = main(["evaluate", "--checkpoints", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_INTERRUPTED == 130
    assert err == [f"cpi: interrupted by {sig.name}; finished work is kept; run the same command again to resume"]
