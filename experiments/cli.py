"""``cpi`` subcommands of the ``experiments`` package (registered by :mod:`cpi.cli`): ``run`` and ``organism``."""

from __future__ import annotations

import argparse

from experiments.organism import cli as organism_cli


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``run`` and ``organism {run,sweep}`` to the ``cpi`` parser."""
    organism_cli.register(sub)
