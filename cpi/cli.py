"""The ``cpi`` command line: one subcommand group per package.

Each package contributes its subcommands through ``register(subparsers)`` in
its own ``cli`` module; handlers import heavy libraries lazily so that
``cpi --help`` and ``cpi theory ...`` stay fast. A :class:`cpi.errors.CpiError`
raised anywhere becomes a one-line ``cpi: error: ...`` and exit code 2.
SIGINT and SIGTERM stop every command the same way (:mod:`cpi.signals`): one
line saying how to resume, exit code 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from cpi.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, CpiError


def build_parser() -> argparse.ArgumentParser:
    from experiments import cli as experiments_cli
    from fullscale import cli as fullscale_cli
    from mechinterp import cli as mechinterp_cli
    from theory import cli as theory_cli

    parser = argparse.ArgumentParser(
        prog="cpi",
        description="Context-parametric inversion: theory simulator, knowledge-conflict evaluation, "
        "instruction finetuning and mechanistic probes.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    theory_cli.register(sub)
    fullscale_cli.register(sub)
    mechinterp_cli.register(sub)
    experiments_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from cpi.library_logs import condense_load_reports

    condense_load_reports(not args.verbose)  # transformers' load-report table: one line unless -v
    from cpi.signals import RESUME_HINT, stop_on_signals

    try:
        with stop_on_signals():
            code = args.func(args)
    except CpiError as exc:
        from cpi.library_logs import with_load_summary

        print(f"cpi: error: {with_load_summary(one_line(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:  # cpi.errors.Interrupted (SIGINT or SIGTERM) included
        print(f"cpi: {one_line(exc) or 'interrupted; ' + RESUME_HINT}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (line breaks inside it become "; ")."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
