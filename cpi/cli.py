"""The ``cpi`` command line: one subcommand group per package.

Each package contributes its subcommands through ``register(subparsers)`` in
its own ``cli`` module; handlers import heavy libraries lazily so that
``cpi --help`` and ``cpi theory ...`` stay fast. A :class:`cpi.errors.CpiError`
raised anywhere becomes a one-line ``cpi: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from cpi.errors import CpiError


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
    try:
        code = args.func(args)
    except CpiError as exc:
        print(f"cpi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cpi: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
