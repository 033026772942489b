"""The ``fct`` command line. Each subcommand lives in its own module exposing ``add_parser``.

A subcommand's ``add_parser(subparsers)`` registers its parser and sets ``func`` (``args -> int``).
``FctError`` is turned into ``error: <message>`` and exit status 2 (usage/input problem).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fct_registry.errors import FctError

# Module names under fct_registry.cli, in the order they appear in ``fct --help``.
COMMANDS: tuple[str, ...] = (
    "evaluate",
    "register",
    "resolve",
    "graph",
    "embed",
    "upgrade",
    "backfill",
    "search",
    "gate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fct",
        description="Forward Compatible Training registry: train, register, resolve and apply "
        "embedding-model upgrades without backfilling.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"fct_registry.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FctError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
