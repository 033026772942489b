"""``fct graph FAMILY``: draw the compatibility graph (and log it to MLflow)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.cli._common import add_tracking_uri
from fct_registry.cli.resolve import mlflow_client
from fct_registry.registry.refs import parse_ref
from fct_registry.resolver.load import load_graph
from fct_registry.resolver.plot import log_graph_to_mlflow, save_graph_png
from fct_registry.resolver.resolve import resolve

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
    parser = subparsers.add_parser(
        "graph",
        help="draw the compatibility graph of a family (versions, transformations, top-1)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    client = mlflow_client(args.tracking_uri)
    graph = load_graph(client, args.family)
    highlight = None
    if args.highlight:
        source, target = (parse_ref(r) for r in args.highlight)
        highlight = resolve(graph, source, target).chosen
    png = args.out or Path(f"{args.family}-compatibility-graph.png")
    out = save_graph_png(graph, png, highlight)
    print(
        f"wrote {out}: {len(graph.nodes)} versions, {len(graph.edges)} transformations, "
        f"{len(graph.chains)} recorded chains"
    )
    for note in graph.notes:
        print(f"note: {note}")
    if args.log_to_mlflow:
        run_id = log_graph_to_mlflow(client, graph, out)
        print(f"logged to MLflow run {run_id} (artifacts under resolver/)")
    return 0
