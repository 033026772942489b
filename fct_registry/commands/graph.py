"""``fct graph``, once its arguments are parsed (the parser is ``fct_registry.cli.graph``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.registry.refs import parse_ref
from fct_registry.registry.store import open_tracking_store
from fct_registry.resolver.load import load_graph
from fct_registry.resolver.plot import log_graph_to_mlflow, save_graph_png
from fct_registry.resolver.resolve import resolve


def run(args: argparse.Namespace) -> int:

    client = open_tracking_store(args.tracking_uri, read_only=True)
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
