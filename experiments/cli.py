"""``cpi`` subcommands of the ``experiments`` package (registered by :mod:`cpi.cli`): ``run``, ``organism`` and ``controlled``."""

from __future__ import annotations

import argparse

from experiments.controlled import cli as controlled_cli
from experiments.organism import cli as organism_cli


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``run``, ``organism {run,sweep}`` and ``controlled {run,sweep}`` to the ``cpi`` parser."""
    organism_cli.register(sub)
    controlled_cli.register(sub)
