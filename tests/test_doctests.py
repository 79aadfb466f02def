"""Runnable docstring examples are run: a module's ``>>>`` examples must print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["fullscale.batching", "fullscale.architectures", "fullscale.finetune_config", "fullscale.conflicts",
           "mechinterp.hooks", "experiments.organism.experiment", "cpi.config", "cpi.cli_config", "theory.run",
           "experiments.main_job", "experiments.controlled.regime_run"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name}: no examples found"
    assert result.failed == 0
