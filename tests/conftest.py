"""Test-wide fixtures: every test starts from the same seeds, offline."""

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


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test models run fastest on one thread; two threads on a busy 2-core box can be 100x slower."""
    import torch

    torch.set_num_threads(1)
    yield


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
