"""The ``fct`` command line: parsing and dispatch.

Each subcommand has a parser module here, ``fct_registry.cli.<name>``, exposing
``add_parser(subparsers)`` and optionally ``check(args)`` (argument checks that need no heavy
import), and an implementation, ``fct_registry.commands.<name>``, exposing ``run(args) -> int``.
``FctError`` is turned into ``error: <message>`` and exit status 2 (usage/input problem).

Dispatch imports modules by name (``importlib``): only the parser of the subcommand being run,
and its implementation only once the arguments have passed ``check``. So ``fct --help`` and a
usage error answer at once instead of waiting for torch, MLflow and pyarrow to import; the other
subcommands appear in ``fct --help`` through their one-line help below.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from fct_registry import __version__
from fct_registry.errors import FctError

# Module names under fct_registry.cli and their one-line help, in ``fct --help`` order.
COMMANDS: dict[str, str] = {
    "evaluate": "retrieval metrics (top-1, top-5, mAP) of query vs gallery embeddings",
    "register": "register the pipeline's models in MLflow (idempotent)",
    "resolve": "choose the transformation chain from one version to another, with its numbers",
    "graph": "draw the compatibility graph of a family (versions, transformations, top-1)",
    "embed": "index images into a gallery with a registered version and its side-info",
    "upgrade": "upgrade a stored gallery to a newer version through registered transformations",
    "search": "top-k nearest gallery items of query embeddings (e.g. against an upgraded gallery)",
    "gallery": "galleries in PostgreSQL + pgvector: copy, list, rollback, prune, embedded server",
    "gate": "release gate: check a candidate version against production, optionally promote",
}

# Exit status of a command whose reader went away (`fct ... | head`), as if killed by SIGPIPE.
EXIT_BROKEN_PIPE = 141


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``fct`` parser with every subcommand's full parser, or only ``command``'s (the
    others are listed with their help line)."""
    parser = argparse.ArgumentParser(
        prog="fct",
        description="Forward Compatible Training registry: train, register, resolve and apply "
        "embedding-model upgrades without backfilling.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_line in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"fct_registry.cli.{name}").add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=help_line, add_help=False)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is not an option)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    # ``fct --help`` lists every command from COMMANDS; a typo needs no module either.
    parser = build_parser(command) if command else build_parser("")
    try:
        args = parser.parse_args(argv)
        check = getattr(importlib.import_module(f"fct_registry.cli.{args.command}"), "check", None)
        if check is not None:
            check(args)
        run = importlib.import_module(f"fct_registry.commands.{args.command}").run
        status = int(run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except FctError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) has gone: stop quietly. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
