"""``fct search``, once its arguments are parsed (the parser is ``fct_registry.cli.search``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fct_registry.commands.pgvector import npy_queries, search_pg
from fct_registry.errors import DataError
from fct_registry.evaluation.distances_np import NP_DISTANCES
from fct_registry.evaluation.labels import Labels
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.pg.location import is_pg_url
from fct_registry.gallery.search import gallery_version, search, topk_accuracy


def run(args: argparse.Namespace) -> int:
    if is_pg_url(args.gallery):  # served from PostgreSQL + pgvector
        return search_pg(args, _from_gallery)

    NP_DISTANCES.check(args.distance)
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit must be positive, got {args.limit}")
    gallery = Gallery.open(args.gallery)
    gallery.check_usable("the gallery")  # no rows, or duplicate ids: refused, duplicates named
    if args.query_gallery:
        query_gallery = Gallery.open(args.query_gallery)
        query_gallery.check_usable("the query gallery")
        queries, ids, labels, version = _from_gallery(query_gallery, args.limit)
        query_name = query_gallery.uri
    else:
        queries, labels = npy_queries(args)
        query_name = f"--query-labels {args.query_labels}"
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
        accuracy = topk_accuracy(
            result,
            labels.ids,
            query_classes=labels.classes,
            query_name=query_name,
            gallery_name=gallery.uri,
        )
    classes = result.gallery_classes  # what the gallery labels printed below index
    if args.json:
        print(
            json.dumps(
                {
                    "gallery": gallery.uri,
                    "version": gallery_version(gallery),
                    "k": result.k,
                    "distance": args.distance,
                    "accuracy": accuracy,
                    **({"classes": list(classes)} if classes is not None else {}),
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
        label = f" [label {_name(labels.ids[i], labels.classes)}]" if labels is not None else ""
        print(f"  {ids[i]}{label}:")
        for j in range(result.k):
            if result.ids[i, j] is None:
                break
            got = (
                f"  label {_name(result.labels[i, j], classes)}"
                if result.labels is not None
                else ""
            )
            print(f"    {j + 1:>2}. {result.ids[i, j]}  d={result.distances[i, j]:.4f}{got}")
    if accuracy is not None:
        print(
            f"top-1 {accuracy['top1']:.2f}%, top-5 {accuracy['top5']:.2f}% over "
            f"{int(accuracy['queries'])} queries with a same-label item in the gallery"
        )
    return 0


def _name(label: int, classes: tuple[str, ...] | None) -> str:
    return str(label) if classes is None or not 0 <= label < len(classes) else classes[label]


def _from_gallery(gallery: Any, limit: int | None) -> tuple[Any, list[str], Labels | None, int]:
    import numpy as np
    import pyarrow as pa

    version = gallery_version(gallery)
    batches, rows = [], 0
    for batch in gallery.batches():
        batches.append(batch)
        rows += batch.num_rows
        if limit is not None and rows >= limit:
            break
    table = pa.Table.from_batches(batches).slice(0, limit)
    batch = table.combine_chunks().to_batches()[0]
    queries = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, f"{gallery.uri} (queries)")
    ids = batch.column(gallery_schema.ID).to_pylist()
    labels = None
    if gallery_schema.LABEL in batch.schema.names:
        label_ids = batch.column(gallery_schema.LABEL).fill_null(-1).to_numpy().astype(np.int64)
        labels = Labels(label_ids, gallery.manifest.classes)  # compared with the gallery's by name
    return queries, ids, labels, version
