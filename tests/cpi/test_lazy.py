"""Lazy package re-exports (cpi.lazy)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_names_load_on_first_use_and_unknown_names_fail():
    code = (
        "import sys, fullscale, mechinterp\n"
        "assert 'load_conflicts' in dir(fullscale) and 'run_probe' in dir(mechinterp)\n"
        "from fullscale import load_conflicts\n"
        "assert fullscale.__dict__['load_conflicts'] is load_conflicts\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    import fullscale

    with pytest.raises(AttributeError, match="module 'fullscale' has no attribute 'nope'"):
        fullscale.nope  # noqa: B018
