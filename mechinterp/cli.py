"""``cpi`` subcommands of the ``mechinterp`` package (registered by :mod:`cpi.cli`)."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    """Add this package's subcommands to the top-level ``cpi`` parser."""
