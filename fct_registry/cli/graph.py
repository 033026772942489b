"""``fct graph FAMILY``: draw the compatibility graph (and log it to MLflow)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.cli._common import add_command, add_tracking_uri, check_store
from fct_registry.registry.refs import parse_ref

DESCRIPTION = """\
Draw a family's compatibility graph from the registry: versions as nodes, registered
transformations as arcs labelled with their measured top-1 (percent), coloured by the side-info
extractor they read; recorded chains are dashed. --log-to-mlflow also logs the picture and the
graph as JSON to a run named compatibility-graph in the experiment named after the family."""

EPILOG = """\
examples:
  fct graph fashion --out fashion-graph.png
  fct graph fashion --log-to-mlflow --highlight fashion@1 fashion@3"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "graph", DESCRIPTION, EPILOG)
    parser.add_argument("family", metavar="FAMILY", help="the family's registered model name")
    add_tracking_uri(parser)
    parser.add_argument(
        "--out",
        type=Path,
        metavar="PNG",
        help="where to write the picture (default: FAMILY-compatibility-graph.png)",
    )
    parser.add_argument(
        "--log-to-mlflow", action="store_true", help="also log the picture and graph JSON"
    )
    parser.add_argument(
        "--highlight",
        nargs=2,
        metavar=("FROM", "TO"),
        help="draw the chain `fct resolve FROM TO` picks in bold",
    )


def check(args: argparse.Namespace) -> None:
    for ref in args.highlight or ():
        parse_ref(ref)
    check_store(args.tracking_uri)
