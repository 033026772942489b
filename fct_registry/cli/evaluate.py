"""``fct evaluate``: CMC top-1/top-5 and mAP of query embeddings against a gallery (.npy files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fct_registry.cli._common import add_command, add_device, add_json, check_file
from fct_registry.errors import FctError

DESCRIPTION = """\
Score retrieval of gallery items for each query embedding: CMC top-1 and top-5 (percent of
queries with a same-label item among the k nearest gallery items) and mAP over the full
ranking, all in percent. Queries with no same-label gallery item are skipped.

Embeddings are 2-D float arrays (one row per item); labels are 1-D arrays of class ids
(integers or strings), one per row. Files are read with numpy.load(allow_pickle=False)."""

EPILOG = """\
examples:
  # new-model queries against a gallery of old embeddings
  fct evaluate --query q.npy --query-labels q_labels.npy \\
               --gallery g.npy --gallery-labels g_labels.npy --json

  # one set against itself, each item excluded from its own results
  fct evaluate --query emb.npy --query-labels labels.npy --leave-one-out --distance cosine"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "evaluate", DESCRIPTION, EPILOG)
    parser.add_argument(
        "--query",
        required=True,
        type=Path,
        metavar="Q.npy",
        help="query embeddings, shape (n_query, dim)",
    )
    parser.add_argument(
        "--query-labels",
        required=True,
        type=Path,
        metavar="QL.npy",
        help="query class ids, shape (n_query,)",
    )
    parser.add_argument(
        "--gallery",
        type=Path,
        metavar="G.npy",
        help="gallery embeddings, shape (n_gallery, dim); "
        "optional with --leave-one-out (defaults to the query set)",
    )
    parser.add_argument(
        "--gallery-labels",
        type=Path,
        metavar="GL.npy",
        help="gallery class ids, shape (n_gallery,); optional with --leave-one-out",
    )
    parser.add_argument(
        "--leave-one-out",
        action="store_true",
        help="query and gallery are the same items; an item never retrieves itself",
    )
    parser.add_argument(
        "--distance",
        default="l2",
        metavar="NAME",
        help="distance metric: l2 or cosine (default: %(default)s)",
    )
    add_device(parser, "cpu", "where to compute: cpu, cuda or auto (default: %(default)s)")
    add_json(parser, '{"top1": .., "top5": .., "mAP": ..} (percent)')


def check(args: argparse.Namespace) -> None:
    if (args.gallery is None) != (args.gallery_labels is None):
        raise FctError("pass both --gallery and --gallery-labels, or neither")
    if args.gallery is None and not args.leave_one_out:
        raise FctError(
            "--gallery and --gallery-labels are required unless --leave-one-out is given "
            "(which uses the query set as the gallery)"
        )
    for flag in ("query", "query_labels", "gallery", "gallery_labels"):
        check_file("--" + flag.replace("_", "-"), getattr(args, flag))
