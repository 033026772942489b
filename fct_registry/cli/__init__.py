"""The ``fct`` command line: parsing and dispatch.

Each subcommand has a parser module here, ``fct_registry.cli.<name>``, exposing
``add_parser(subparsers)`` and optionally ``check(args)`` (argument checks that need no heavy
import), and an implementation, ``fct_registry.commands.<name>``, exposing ``run(args) -> int``.
``FctError`` is turned into ``error: <message>`` and exit status 2 (usage/input problem).
A parser starts from ``_common.add_command`` (its help line is the one in ``COMMANDS``), and an
option that several commands take is declared once: ``--tracking-uri``, ``--json``,
``--device``, ``--outputs``, ``--out DST`` in ``_common``; the image-decoding and
gallery-writing groups in ``embed`` (with the functions that hand their values to the library).

Dispatch imports modules by name (``importlib``): only the parser of the subcommand being run,
and its implementation only once the arguments have passed ``check``. So ``fct --help`` and a
usage error answer at once instead of waiting for torch, MLflow and pyarrow to import; the other
subcommands appear in ``fct --help`` through their one-line help below.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import tempfile
from collections.abc import Sequence

from fct_registry import __version__
from fct_registry._redact import first_line, install, redact
from fct_registry.errors import FctError
from fct_registry.registry.store import close_command_stores

# Module names under fct_registry.cli and their one-line help, in ``fct --help`` order.
COMMANDS: dict[str, str] = {
    "evaluate": "retrieval metrics (top-1, top-5, mAP) of query vs gallery embeddings",
    "register": "register the pipeline's models in MLflow (idempotent)",
    "resolve": "choose the transformation chain from one version to another, with its numbers",
    "graph": "draw the compatibility graph of a family (versions, transformations, top-1)",
    "embed": "index images into a gallery with a registered version and its side-info",
    "upgrade": "upgrade a stored gallery to a newer version through registered transformations",
    "backfill": "re-embed the most uncertain items of an upgraded gallery (FastFill)",
    "search": "top-k nearest gallery items of query embeddings (e.g. against an upgraded gallery)",
    "gallery": "galleries: pgvector copy, list, rollback, prune, server; import embedding "
    "tables; add side-info",
    "gate": "release gate: check a candidate version against production, optionally promote",
    "init": "write a validated params.yaml for a family from model URIs or embedding tables",
}

# MLflow's HTTP retry budget for a command line: its defaults (7 retries with backoff 2, 120 s
# timeout) retry silently for minutes. A user's own setting of these variables wins.
RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
# Libraries whose errors reach here only when a store or server failed (not a bug in fct):
# reported as one scrubbed line, never as a traceback that could carry a password.
_STORE_ERRORS = {"mlflow", "requests", "urllib3", "sqlalchemy", "psycopg2", "botocore", "boto3"}

# A full disk or an exhausted quota: the user's to fix, not a bug. Every writer publishes files
# atomically (temporary file, then rename), so what is published is whole and a rerun resumes.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
# Commands that resume an interrupted run when rerun with the same arguments.
_RESUMABLE = {"embed", "upgrade", "backfill"}

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


def _prepare_process() -> None:
    """Credentials never printed or logged (:mod:`fct_registry._redact`); MLflow's "View run
    at <url>" lines off (the URL can carry user-info); a bounded retry budget."""
    install()
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    for key, value in RETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)


def retry_budget() -> str:
    return ", ".join(f"{k}={os.environ.get(k, v)}" for k, v in RETRY_DEFAULTS.items())


def no_space_message(exc: OSError, args: argparse.Namespace | None) -> str:
    """One line for a full disk (ENOSPC) or quota (EDQUOT): where, and what a rerun does."""
    out = getattr(args, "out", None)
    where = exc.filename or out or "the output location"
    if exc.filename is None and str(out).startswith("s3://"):  # uploads are staged locally
        where = f"the local temporary copy of {out} (in {tempfile.gettempdir()}, set TMPDIR)"
    command = getattr(args, "command", None)
    if command in _RESUMABLE:
        rerun = (
            f"rerun the same `fct {command}` command: the files already published are whole "
            "and it resumes after them"
        )
    else:
        rerun = "rerun the command"
    reason = os.strerror(exc.errno or errno.ENOSPC).lower()
    return (
        f"{reason} while writing {redact(str(where))}; free some space (or write to another "
        f"location) and {rerun}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _prepare_process()
    command = _command(argv)
    # ``fct --help`` lists every command from COMMANDS; a typo needs no module either.
    parser = build_parser(command) if command else build_parser("")
    args: argparse.Namespace | None = None
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
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader (e.g. `| head`) has gone: stop quietly. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        # One handler: requests' errors are OSErrors too, and must reach the store branch.
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            print(f"error: {no_space_message(exc, args)}", file=sys.stderr)
            return 2
        if type(exc).__module__.split(".")[0] not in _STORE_ERRORS:
            raise  # a bug: its traceback is what a report needs
        print(
            f"error: the tracking store or artifact store failed ({type(exc).__name__}: "
            f"{first_line(exc)[:500]}); check that it is running and reachable, and the "
            f"credentials (HTTP requests are retried within {retry_budget()}; set these "
            "variables to change that)",
            file=sys.stderr,
        )
        return 2
    finally:
        close_command_stores()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
