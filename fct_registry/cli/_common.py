"""Arguments shared by the ``fct`` subcommands, so every command words them the same way."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.errors import FctError
from fct_registry.registry.store import check_readable, resolve_tracking_uri


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking and registry URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the working directory; `make` sets it to the project's)",
    )


def check_positive(**flags: int | None) -> None:
    """Each given ``--flag`` value, when set, is at least 1 (``check_positive(batch_size=n)``)."""
    for name, value in flags.items():
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise FctError(f"{flag} must be a positive number, got {value}")


def check_file(flag: str, path: Path | None) -> None:
    """A local input named on the command line exists (URIs such as ``s3://`` are not checked)."""
    if path is not None and "://" not in str(path) and not Path(path).exists():
        raise FctError(f"{flag} file {path} does not exist; check the path")


def check_store(tracking_uri: str | None) -> None:
    """A read-only command has a tracking store to read (it never creates an empty one)."""
    check_readable(resolve_tracking_uri(tracking_uri))
