"""``fct register``: log and register a pipeline's models in MLflow (idempotent)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fct_registry.cli._common import add_tracking_uri
from fct_registry.config import load_params
from fct_registry.layout import Layout
from fct_registry.registry.register import register_pipeline

DESCRIPTION = """\
Register the pipeline's side-info extractor, every embedding version and every transformation
in the MLflow Model Registry, with links between them (fct.* tags), evaluation metrics, the
params and data they were trained from, the git commit and a markdown description holding the
compatibility table. Models already registered (same content hash) keep their versions, so
rerunning on unchanged outputs creates nothing.

Registered models, for family F: F (embedding versions; MLflow version N is F@N),
F-side-info, and F-transformations (tags fct.from / fct.to name family versions)."""

EPILOG = """\
examples:
  # the embedded default: ./mlflow.db (SQLite) with artifacts in ./mlartifacts
  fct register

  # a tracking server (PostgreSQL backend, S3 artifacts), machine-readable summary
  fct register --tracking-uri http://mlflow.internal:5000 --json"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register",
        help="register the pipeline's models in MLflow (idempotent)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file the outputs were built from (default: %(default)s)",
    )
    parser.add_argument(
        "--outputs",
        type=Path,
        default=Path("outputs"),
        help="root folder of pipeline outputs (default: %(default)s)",
    )
    add_tracking_uri(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the registration summary as JSON"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    if not args.json:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("fct_registry.registry").setLevel(logging.INFO)
    summary = register_pipeline(load_params(args.params), Layout(args.outputs), args.tracking_uri)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2, sort_keys=True))
        return 0
    print(
        f"{summary.family} in {summary.tracking_uri} (git {summary.git_commit[:12]}): "
        f"{summary.created} new, {summary.unchanged} unchanged"
    )
    for label, versions in (
        ("side-info", {summary.side_info.pipeline_key: summary.side_info}),
        ("embedding", summary.embeddings),
        ("transformation", summary.transformations),
    ):
        for key, v in versions.items():
            ends = (
                f"  {summary.family}@{v.source} -> {summary.family}@{v.target}"
                if v.source is not None
                else ""
            )
            state = "new" if v.created else "unchanged"
            print(f"  {label:<15}{key:<20}{v.uri:<36}{state}{ends}")
    return 0
