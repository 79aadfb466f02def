"""Test-wide fixtures: every test starts from the same seeds, offline (except the fetch of real models).

``real_smollm2`` / ``real_gemma`` give the fetched registry models (``cpi models fetch``, into the model
cache; ``make test`` fetches smollm2 before pytest starts). A failed fetch fails the tests that need the
model: it is never a silent skip. Tests marked ``gemma`` are opt-in: ``python -m pytest -m gemma``.
"""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("CPI_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# ``dtype: auto`` means bf16 only where the CPU has AMX-BF16 / AVX-512-BF16: the suite answers "no" on every
# machine, so no test depends on the CPU it runs on (``CPI_CPU_BF16=1 python -m pytest`` runs it the other
# way); tests of bf16 ask for it with the ``bf16_allowed`` fixture
os.environ.setdefault("CPI_CPU_BF16", "0")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test models run fastest on one thread; two threads on a busy 2-core box can be 100x slower."""
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture
def bf16_allowed(monkeypatch):
    """bf16 allowed (and ``auto`` = bf16) whatever this CPU has: torch emulates it where the instructions
    are missing, slower but with the same numbers."""
    monkeypatch.setenv("CPI_CPU_BF16", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed Python, NumPy and (if imported) torch before every test."""
    import sys

    random.seed(0)
    import numpy as np

    np.random.seed(0)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(0)
    yield


def _fetch_real(name: str):
    from cpi.errors import CpiError
    from fullscale.models import REGISTRY_FILE, fetch_model

    try:
        return fetch_model(name, registry=REGISTRY_FILE)
    except CpiError as exc:
        pytest.fail(f"could not fetch the real model {name} (needed by `real` tests): {exc}", pytrace=False)


@pytest.fixture(scope="session")
def real_smollm2():
    """The converted SmolLM2-135M-Instruct checkpoint folder (fetched into the model cache on first use)."""
    return _fetch_real("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def real_gemma():
    """The converted Gemma-3-270M (base) checkpoint folder (fetched into the model cache on first use)."""
    return _fetch_real("gemma-3-270m")


def pytest_collection_modifyitems(config, items):
    """``gemma`` tests run only when selected by ``-m`` (e.g. ``python -m pytest -m gemma``)."""
    if "gemma" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in (minutes on CPU): python -m pytest -m gemma")
    for item in items:
        if item.get_closest_marker("gemma") is not None:
            item.add_marker(skip)
