"""``fct search --gallery G --query-gallery Q``: top-k retrieval against a (upgraded) gallery."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fct_registry.cli.gallery import add_search_arguments, search_pg
from fct_registry.errors import DataError
from fct_registry.gallery.pgvector import is_pg_url

DESCRIPTION = """\
Answer top-k queries against a stored gallery: the k nearest gallery items of each query
embedding, streamed shard by shard in bounded memory. Queries come from another gallery
(--query-gallery, e.g. items indexed with the new version by `fct embed`) or from a .npy file of
embeddings (--query). The queries' version must be the gallery's: to search an old gallery with
new-version queries, upgrade it first (`fct upgrade`).

When both sides carry labels, CMC top-1 and top-5 are printed, counted the way `fct evaluate`
and the pipeline's evaluation count them; --exclude-self leaves each query's own id out of its
results (leave-one-out), so the numbers match the compatibility evaluation on the test split."""

EPILOG = """\
examples:
  fct search --gallery galleries/v1-to-3 --query-gallery galleries/v3 --exclude-self
  fct search --gallery galleries/v3 --query q.npy --query-version 3 -k 5 --json"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="top-k nearest gallery items of query embeddings (e.g. against an upgraded gallery)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        help="with --query: class ids, shape (n,), for top-k accuracy",
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
    parser.add_argument(
        "--json", action="store_true", help="print every query's results (and the accuracy) as JSON"
    )
    add_search_arguments(parser)  # pgvector galleries: --ef-search, --exact, --recall-queries
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if is_pg_url(args.gallery):  # served from PostgreSQL + pgvector (no torch needed)
        return search_pg(args, _from_gallery)
    import numpy as np

    from fct_registry.evaluation.distances import DISTANCES
    from fct_registry.gallery import Gallery
    from fct_registry.gallery.search import gallery_version, search, topk_accuracy

    DISTANCES.check(args.distance)
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit must be positive, got {args.limit}")
    gallery = Gallery.open(args.gallery)
    if args.query_gallery:
        queries, ids, labels, version = _from_gallery(Gallery.open(args.query_gallery), args.limit)
    else:
        queries = np.load(args.query, allow_pickle=False)[: args.limit]
        labels = (
            None
            if args.query_labels is None
            else np.load(args.query_labels, allow_pickle=False)[: args.limit]
        )
        ids = [f"query-{i}" for i in range(len(queries))]
        version = args.query_version
        if args.exclude_self:
            raise DataError("--exclude-self needs query ids: use --query-gallery")
    result = search(
        gallery,
        queries,
        k=args.k,
        distance=args.distance,
        exclude_ids=ids if args.exclude_self else None,
        query_version=version,
    )
    accuracy = None
    if labels is not None and result.labels is not None:
        accuracy = topk_accuracy(result, labels)
    if args.json:
        print(
            json.dumps(
                {
                    "gallery": gallery.uri,
                    "version": gallery_version(gallery),
                    "k": result.k,
                    "distance": args.distance,
                    "accuracy": accuracy,
                    "results": [
                        {
                            "query": q,
                            "ids": result.ids[i].tolist(),
                            "distances": result.distances[i].tolist(),
                            **(
                                {"labels": result.labels[i].tolist()}
                                if result.labels is not None
                                else {}
                            ),
                        }
                        for i, q in enumerate(ids)
                    ],
                },
                indent=2,
            )
        )
        return 0
    family = gallery.manifest.family
    print(
        f"{len(queries)} queries against {gallery.uri} ({family}@{result.gallery_version}, "
        f"{gallery.manifest.rows} items), {args.distance}, top {result.k}"
    )
    for i in range(min(args.show, len(ids))):
        label = f" [label {labels[i]}]" if labels is not None else ""
        print(f"  {ids[i]}{label}:")
        for j in range(result.k):
            if result.ids[i, j] is None:
                break
            got = f"  label {result.labels[i, j]}" if result.labels is not None else ""
            print(f"    {j + 1:>2}. {result.ids[i, j]}  d={result.distances[i, j]:.4f}{got}")
    if accuracy is not None:
        print(
            f"top-1 {accuracy['top1']:.2f}%, top-5 {accuracy['top5']:.2f}% over "
            f"{int(accuracy['queries'])} queries with a same-label item in the gallery"
        )
    return 0


def _from_gallery(gallery: Any, limit: int | None) -> tuple[Any, list[str], Any, int]:
    import numpy as np
    import pyarrow as pa

    from fct_registry.gallery import schema as S
    from fct_registry.gallery.search import gallery_version

    version = gallery_version(gallery)
    batches, rows = [], 0
    for batch in gallery.batches():
        batches.append(batch)
        rows += batch.num_rows
        if limit is not None and rows >= limit:
            break
    table = pa.Table.from_batches(batches).slice(0, limit)
    batch = table.combine_chunks().to_batches()[0]
    queries = S.vectors(batch, S.EMBEDDING, f"{gallery.uri} (queries)")
    ids = batch.column(S.ID).to_pylist()
    labels = None
    if S.LABEL in batch.schema.names:
        labels = batch.column(S.LABEL).fill_null(-1).to_numpy().astype(np.int64)
    return queries, ids, labels, version
