"""``cpi`` subcommands of the ``fullscale`` package (registered by :mod:`cpi.cli`).

The ``data`` group is shared: the conflict-set tools (``check``, ``convert``)
and the IFT-curation tools (``score-context``, ``augment``) each add their
subcommands to it. Every module below imports heavy libraries only inside its
handlers.
"""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    """Add ``data``, ``evaluate``, ``finetune`` and ``models`` to the ``cpi`` parser."""
    from fullscale import cli_conflicts, cli_evaluate, cli_finetune, cli_models

    data = sub.add_parser("data", help="knowledge-conflict sets and IFT data: check, convert, score-context, augment")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    cli_conflicts.register(sub, data_sub)
    cli_evaluate.register(sub, data_sub)
    cli_finetune.register(sub, data_sub)
    cli_models.register(sub)
