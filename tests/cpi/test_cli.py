"""The top-level ``cpi`` command."""

from __future__ import annotations

import subprocess
import sys

from cpi.cli import build_parser, main


def test_every_group_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("theory", "data", "evaluate", "finetune", "probe", "run"):
        assert name in sub.choices, f"'cpi {name}' is missing"


def test_console_script_runs_help():
    out = subprocess.run([sys.executable, "-m", "cpi.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "theory" in out.stdout


def test_unknown_command_exits_nonzero(capsys):
    try:
        main(["no-such-command"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("argparse should reject an unknown command")
