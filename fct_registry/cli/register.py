"""``fct register``: log and register a pipeline's models in MLflow (idempotent)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.cli._common import (
    add_command,
    add_json,
    add_outputs,
    add_tracking_uri,
    check_file,
)

DESCRIPTION = """\
Register the pipeline's side-info extractor, every embedding version and every transformation
in the MLflow Model Registry, with links between them (fct.* tags), evaluation metrics, the
params and data they were trained from, the git commit and a markdown description holding the
compatibility table. Models already registered (same content hash) keep their versions, so
rerunning on unchanged outputs creates nothing.

Registered models, for family F: F (embedding versions; MLflow version N is F@N,
also written F/N or models:/F/N),
F-side-info, and F-transformations (tags fct.from / fct.to name family versions)."""

EPILOG = """\
examples:
  # the embedded default: ./mlflow.db (SQLite) with artifacts in ./mlartifacts
  fct register

  # a tracking server (PostgreSQL backend, S3 artifacts), machine-readable summary
  fct register --tracking-uri http://mlflow.internal:5000 --json"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "register", DESCRIPTION, EPILOG)
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file the outputs were built from (default: %(default)s)",
    )
    add_outputs(parser, "root folder of pipeline outputs (default: %(default)s)")
    add_tracking_uri(parser)
    add_json(parser, "the registration summary")


def check(args: argparse.Namespace) -> None:
    check_file("--params", args.params)
