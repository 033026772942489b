"""The pgvector side of ``fct upgrade``, ``fct search`` and ``fct embed`` (a postgresql:// URL
as --gallery or --out), once their arguments are parsed. Apart from ``fct gallery`` so that the
core commands import none of its heavier actions (side-info extraction runs torch)."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fct_registry.cli._common import load_npy
from fct_registry.commands._summary import print_summary
from fct_registry.errors import DataError, FctError
from fct_registry.evaluation.labels import Labels, labels_from_array
from fct_registry.gallery import Gallery, open_storage
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.pg.catalogue import served
from fct_registry.gallery.pg.connection import connect, driver_errors
from fct_registry.gallery.pg.location import PgLocation, is_pg_url, redact
from fct_registry.gallery.pg.read import read_batches
from fct_registry.gallery.pg.search import HNSW_EF_SEARCH, recall_at_k, search
from fct_registry.gallery.pg.transfer import copy_gallery
from fct_registry.gallery.search import SearchResult, topk_accuracy
from fct_registry.registry.refs import parse_ref
from fct_registry.registry.store import redact_uri, resolve_tracking_uri
from fct_registry.scratch import new_folder, scratch
from fct_registry.upgrade.pgvector import Source, plan_for, upgrade_to_pg


def upgrade_pg(args: argparse.Namespace, client: Any) -> int:
    """``fct upgrade`` when --gallery or --out is a postgresql:// URL."""
    if not is_pg_url(args.out):
        raise FctError(
            "--out must be a postgresql:// URL when --gallery is one; to get Parquet, upgrade "
            "into pgvector and `fct gallery copy URL DST`, or copy first and upgrade the Parquet"
        )
    if args.engine != "local" or args.keep_going:
        raise FctError("--engine ray and --keep-going apply to Parquet outputs only")
    dest = PgLocation.parse(args.out)
    source = Source.open(args.gallery)
    try:
        with scratch("fct-upgrade-") as work:
            plan = plan_for(
                client,
                source,
                parse_ref(args.to),
                work,
                threads=args.threads,
                registry=redact_uri(resolve_tracking_uri(args.tracking_uri)),
                uncertainty=args.for_backfill,
            )
            if args.dry_run:
                print(f"dry run: {source.uri} -> {dest.uri} ({plan.family}@{plan.target})")
                for key, rows in source.manifest.groups.items():
                    print(f"  {rows:,} rows: {plan.routes[key].label(plan.family)}")
                return 0
            report = upgrade_to_pg(
                source, dest, plan, batch_size=args.batch_size, progress=not args.no_progress
            )
    finally:
        source.close()
    summary = {
        "source": report.source,
        "destination": report.destination,
        "table": report.table,
        "previous_table": report.previous_table,
        "target": f"{plan.family}@{plan.target}",
        "rows": report.rows,
        "resumed_rows": report.resumed_rows,
        "already_complete": report.already_complete,
        "served_again": report.reserved,
        "copy_seconds": report.copy_seconds,
        "index_seconds": report.index_seconds,
        "rows_per_second": report.rows_per_second,
    }
    done = f"{dest.uri} already serves {plan.family}@{plan.target}; nothing to do"
    if print_summary(summary, args.json, done):
        return 0
    if report.reserved:
        print(
            f"{dest.uri} serves {plan.family}@{plan.target} again from {report.table}, kept from "
            f"an earlier upgrade of the same rows (nothing recomputed; was "
            f"{report.previous_table}: `fct gallery rollback`)"
        )
    else:
        resumed = f" ({report.resumed_rows} rows kept from an interrupted run)"
        print(
            f"upgraded {report.upgraded_rows} rows to {plan.family}@{plan.target} into "
            f"{report.table}{resumed if report.resumed_rows else ''} in "
            f"{report.copy_seconds:.1f} s ({report.rows_per_second:,.0f} rows/s), HNSW index "
            f"{report.index_seconds:.1f} s; {dest.uri} now serves it"
            + (f" (was {report.previous_table}: `fct gallery rollback`)" if report.previous_table
               else "")
        )  # fmt: skip
    return 0


def npy_queries(args: argparse.Namespace) -> tuple[np.ndarray, Labels | None]:
    """``fct search --query Q.npy [--query-labels L.npy]``: the first ``--limit`` query vectors
    and their labels (class ids, or class names as strings), each file checked by
    :func:`~fct_registry.cli._common.load_npy`."""
    queries = load_npy(args.query, "--query")[: args.limit]
    if args.query_labels is None:
        return queries, None
    labels = load_npy(args.query_labels, "--query-labels", kinds="iuUS")[: args.limit]
    return queries, labels_from_array(labels, f"--query-labels {args.query_labels}")


def search_pg(args: argparse.Namespace, queries_from: Callable[[Any, int | None], Any]) -> int:
    """``fct search`` when --gallery is a postgresql:// URL: HNSW (or exact), queries per second,
    recall@k of HNSW against exact. ``queries_from(gallery, limit)`` reads a Parquet query
    gallery as ``fct search`` does."""
    loc = PgLocation.parse(args.gallery)
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit must be positive, got {args.limit}")
    if args.distance != "l2" and args.distance is not None:
        raise DataError(
            "--distance does not apply to a pgvector gallery: it is searched with the "
            "distance its index was built with (`fct gallery list` shows it)"
        )
    with contextlib.closing(connect(loc)) as conn, driver_errors(loc, "searching"):
        info = served(conn, loc)
        if args.query_gallery and is_pg_url(args.query_gallery):
            queries, ids, labels, version = _pg_queries(args.query_gallery, args.limit)
        elif args.query_gallery:
            queries, ids, labels, version = queries_from(Gallery.open(args.query_gallery),
                                                         args.limit)  # fmt: skip
        else:
            queries, labels = npy_queries(args)
            ids, version = [f"query-{i}" for i in range(len(queries))], args.query_version
            if args.exclude_self:
                raise DataError("--exclude-self needs query ids: use --query-gallery")
        versions = set(info.versions)
        if version is not None and versions != {version}:
            raise DataError(
                f"the queries are {info.family}@{version} embeddings but {loc.uri} holds "
                f"{info.family}@{'/'.join(map(str, sorted(versions)))}; upgrade the gallery "
                f"(`fct upgrade --gallery URL --to {info.family}@{version} --out URL`)"
            )
        exclude = list(ids) if args.exclude_self else None
        result = search(
            conn, loc, queries, k=args.k, exact=args.exact, ef_search=args.ef_search,
            exclude_ids=exclude, info=info,
        )  # fmt: skip
        recall = None
        n_recall = min(args.recall_queries, len(queries))
        if not args.exact and n_recall > 0:
            truth = search(
                conn, loc, queries[:n_recall], k=args.k, exact=True,
                exclude_ids=None if exclude is None else exclude[:n_recall], info=info,
            )  # fmt: skip
            recall = recall_at_k(result.ids[:n_recall], truth.ids)
        accuracy = None
        if labels is not None and result.labels is not None:
            counts, own = _label_stats(conn, loc, exclude)
            as_result = SearchResult(
                result.ids, result.distances, np.zeros_like(result.labels), result.labels,
                info.distance, next(iter(versions)), counts, own, info.manifest().classes,
            )  # fmt: skip
            accuracy = topk_accuracy(
                as_result, labels.ids, query_classes=labels.classes,
                query_name=_query_name(args), gallery_name=loc.uri,
            )  # fmt: skip
    mode = "exact" if args.exact else f"HNSW ef_search={args.ef_search or HNSW_EF_SEARCH}"
    out = {
        "gallery": loc.uri,
        "table": info.table,
        "rows": info.rows,
        "distance": info.distance,
        "mode": mode,
        "k": args.k,
        "queries": len(queries),
        "queries_per_second": result.qps,
        f"recall@{args.k}": recall,
        "recall_queries": n_recall if recall is not None else 0,
        "accuracy": accuracy,
    }
    if args.json:
        out["results"] = [
            {"query": q, "ids": result.ids[i].tolist(), "distances": result.distances[i].tolist()}
            for i, q in enumerate(ids)
        ]
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{len(queries)} queries against {loc.uri} ({info.family}@"
        f"{'/'.join(map(str, sorted(versions)))}, {info.rows} items, {info.distance}), {mode}, "
        f"top {args.k}: {result.qps:,.0f} queries/s"
    )
    if recall is not None:
        print(f"recall@{args.k} of HNSW against exact search: {recall:.4f} over {n_recall} queries")
    for i in range(min(args.show, len(ids))):
        print(f"  {ids[i]}:")
        for j in range(args.k):
            if result.ids[i, j] is None:
                break
            print(f"    {j + 1:>2}. {result.ids[i, j]}  d={result.distances[i, j]:.4f}")
    if accuracy is not None:
        print(
            f"top-1 {accuracy['top1']:.2f}%, top-5 {accuracy['top5']:.2f}% over "
            f"{int(accuracy['queries'])} queries with a same-label item in the gallery"
        )
    return 0


def _query_name(args: argparse.Namespace) -> str:
    """Where the query labels come from, for error messages (a URL's password hidden)."""
    if is_pg_url(args.query_gallery):
        return redact(args.query_gallery)
    return args.query_gallery or f"--query-labels {args.query_labels}"


def _label_stats(
    conn: Any, loc: PgLocation, exclude: list[str] | None
) -> tuple[dict[int, int], Any]:
    """Rows per label in the gallery, and the label of each excluded row (-1: not there), which
    :func:`~fct_registry.gallery.search.topk_accuracy` counts relevant items with."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT coalesce(label, -1), count(*) FROM {loc.gallery} GROUP BY 1")
        counts = {int(k): int(v) for k, v in cur.fetchall()}
        if exclude is None:
            return counts, None
        cur.execute(
            f"SELECT id, coalesce(label, -1) FROM {loc.gallery} WHERE id = ANY(%s)", (exclude,)
        )
        found = dict(cur.fetchall())
    conn.commit()
    return counts, np.array([found.get(i, -1) for i in exclude], dtype=np.int64)


def _pg_queries(url: str, limit: int | None) -> tuple[Any, list[str], Labels | None, int]:
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc, autocommit=True)) as conn:
        info = served(conn, loc)
        if len(info.versions) != 1:
            raise DataError(f"{loc.uri} mixes versions; upgrade it to one version first")
        batches, rows = [], 0
        for batch in read_batches(conn, info):
            batches.append(batch)
            rows += batch.num_rows
            if limit is not None and rows >= limit:
                break
    batch = pa.Table.from_batches(batches).slice(0, limit).combine_chunks().to_batches()[0]
    labels = None
    if gallery_schema.LABEL in batch.schema.names:
        label_ids = batch.column(gallery_schema.LABEL).fill_null(-1).to_numpy().astype(np.int64)
        labels = Labels(label_ids, info.manifest().classes)
    queries = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, f"{loc.uri} (queries)")
    return queries, batch.column(gallery_schema.ID).to_pylist(), labels, next(iter(info.versions))


def embed_destination(out: str, images: Path) -> tuple[Any, Callable[[], str]]:
    """``fct embed --out``: ``(storage to write, publish)``. A postgresql:// URL gets a local
    Parquet staging folder that ``publish()`` copies into pgvector (then removes), each row's
    ``source_uri`` the images file; anything else is written in place and ``publish()`` only
    returns its URI."""
    if not is_pg_url(out):
        storage = open_storage(out)
        return storage, lambda: storage.uri
    PgLocation.parse(out)  # a bad URL fails before any image is embedded
    folder = new_folder("fct-embed-pg-")  # removed at exit also when embedding fails
    storage = open_storage(folder / "gallery")

    def publish() -> str:
        try:
            rows_from = str(Path(images).resolve())
            return copy_gallery(str(folder / "gallery"), out, row_source=rows_from).destination
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return storage, publish
