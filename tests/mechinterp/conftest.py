"""mechinterp test options: the ``real`` marker (tests that load a real pretrained checkpoint)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "real: loads a real pretrained checkpoint (SmolLM2-135M-Instruct)")
