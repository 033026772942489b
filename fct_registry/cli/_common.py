"""Arguments shared by the ``fct`` subcommands, so every command words them the same way."""

from __future__ import annotations

import argparse


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking and registry URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the working directory; `make` sets it to the project's)",
    )
