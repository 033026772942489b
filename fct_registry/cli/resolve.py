"""``fct resolve FROM TO``: which transformation chain upgrades a gallery, and why."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.cli._common import (
    add_command,
    add_json,
    add_outputs,
    add_tracking_uri,
    check_positive,
    check_store,
)
from fct_registry.errors import FctError
from fct_registry.registry.refs import REF_HELP, parse_ref
from fct_registry.resolver.load import DEFAULT_PAGE_SIZE

DESCRIPTION = (
    """\
Pick the chain of registered transformations that upgrades a gallery embedded with FROM into
TO's embedding space: the route with the highest measured top-1 (new-version queries against the
upgraded old gallery), fewest hops on ties. Only transformations reading the side-info extractor
the gallery was indexed with are used (FROM's fct.side_info tag, or --side-info).

A single transformation or a recorded chain scores its measured top-1; a route joining several
is estimated as the product of their top-1 fractions (shown as "estimated"). --evaluate measures
the chosen route end to end on the stored test embeddings, --record registers it as a chain so
later resolves use the measurement, --export-onnx writes it as one fused ONNX graph.

"""
    + REF_HELP
)

EPILOG = """\
examples:
  fct resolve fashion@1 fashion@3 --json
  fct resolve fashion@1 fashion@production
  fct resolve fashion@1 fashion@latest --evaluate --record --export-onnx chain.onnx"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "resolve", DESCRIPTION, EPILOG)
    parser.add_argument("source", metavar="FROM", help="the gallery's version, e.g. fashion@1")
    parser.add_argument(
        "target",
        metavar="TO",
        help="the version to upgrade to: fashion@3 (= fashion/3, models:/fashion/3), "
        "fashion@production (an alias), fashion@latest",
    )
    add_tracking_uri(parser)
    parser.add_argument(
        "--side-info",
        metavar="F-side-info/N",
        help="the extractor the gallery's side-info was computed with (default: FROM's "
        "fct.side_info tag)",
    )
    add_json(parser, "the resolution")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="measure the chosen chain end to end on the stored test embeddings (--outputs)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="with --evaluate: register the multi-hop chain (fct.role=chain) with its measurement",
    )
    parser.add_argument(
        "--export-onnx",
        type=Path,
        metavar="PATH",
        help="write the chosen chain as one fused ONNX graph, checked against hop-by-hop",
    )
    add_outputs(
        parser, "pipeline outputs holding the stored embeddings (default: %(default)s)", "DIR"
    )
    parser.add_argument(
        "--distance",
        help="distance for --evaluate: l2 or cosine (default: evaluation.distance of "
        "./params.yaml, the one every edge was measured with, else l2)",
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help="model versions per registry search page (default: %(default)s)",
    )


def check(args: argparse.Namespace) -> None:
    source, target = parse_ref(args.source), parse_ref(args.target)
    if source.family != target.family:
        raise FctError(
            f"FROM and TO must be versions of one family, got {source.family!r} and "
            f"{target.family!r}; e.g. fct resolve {source.family}@1 {source.family}@2"
        )
    if args.record and not args.evaluate:
        raise FctError("--record stores a measurement: pass --evaluate with it")
    check_positive(page_size=args.page_size)
    check_store(args.tracking_uri)
