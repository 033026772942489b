"""``fct search --gallery G --query-gallery Q``: top-k retrieval against a (upgraded) gallery."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.cli._common import add_command, add_json, check_file, check_positive
from fct_registry.cli.gallery import add_search_arguments
from fct_registry.errors import FctError

DESCRIPTION = """\
Answer top-k queries against a stored gallery: the k nearest gallery items of each query
embedding, streamed shard by shard in bounded memory. Queries come from another gallery
(--query-gallery, e.g. items indexed with the new version by `fct embed`) or from a .npy file of
embeddings (--query). The queries' version must be the gallery's: to search an old gallery with
new-version queries, upgrade it first (`fct upgrade`).

When both sides carry labels, CMC top-1 and top-5 are printed, counted the way `fct evaluate`
and the pipeline's evaluation count them. Labels are compared by class name when the galleries
record names (an ImageFolder tree's folders), so a query tree lacking a class folder is scored
right; ids that cannot be matched by name are refused. --exclude-self leaves each query's own id
out of its results (leave-one-out), so the numbers match the compatibility evaluation on the test
split."""

EPILOG = """\
examples:
  fct search --gallery galleries/v1-to-3 --query-gallery galleries/v3 --exclude-self
  fct search --gallery galleries/v3 --query q.npy --query-version 3 -k 5 --json"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "search", DESCRIPTION, EPILOG)
    parser.add_argument(
        "--gallery",
        required=True,
        metavar="G",
        help="the gallery to search: a folder or s3://bucket/prefix",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--query-gallery",
        metavar="Q",
        help="a gallery whose embeddings are the queries (ids and labels too)",
    )
    source.add_argument(
        "--query", type=Path, metavar="Q.npy", help="query embeddings, shape (n, dim)"
    )
    parser.add_argument(
        "--query-labels",
        type=Path,
        metavar="L.npy",
        help="with --query: labels, shape (n,), for top-k accuracy: class names (strings), "
        "or class ids when the gallery records no names",
    )
    parser.add_argument(
        "--query-version",
        type=int,
        metavar="N",
        help="with --query: the family version that embedded the queries "
        "(checked against the gallery's)",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N queries")
    parser.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--distance", default="l2", help="l2 or cosine (default: l2)")
    parser.add_argument(
        "--exclude-self",
        action="store_true",
        help="a query never retrieves the gallery item with its own id",
    )
    parser.add_argument(
        "--show",
        type=int,
        default=3,
        metavar="N",
        help="print the results of the first N queries (default: 3)",
    )
    add_json(parser, "every query's results (and the accuracy)")
    add_search_arguments(parser)  # pgvector galleries: --ef-search, --exact, --recall-queries


def check(args: argparse.Namespace) -> None:
    check_positive(limit=args.limit, k=args.k)
    check_file("--gallery", args.gallery)
    check_file("--query-gallery", args.query_gallery)
    check_file("--query", args.query)
    check_file("--query-labels", args.query_labels)
    if args.query is not None and args.query_version is None:
        # A .npy file records no embedding space; comparing spaces blindly gives nonsense.
        raise FctError(
            f"--query {args.query} does not record which version embedded it: pass "
            "--query-version N (it must be the gallery's version; otherwise upgrade the gallery "
            "first), or use --query-gallery, which records it"
        )
