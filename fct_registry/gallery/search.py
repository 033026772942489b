"""Top-k retrieval against a stored gallery: what a user of an upgraded gallery actually runs.

The gallery is streamed in chunks sized from a memory budget; each chunk's distances (the
evaluation's NumPy :mod:`~fct_registry.evaluation.distances_np`, so a core install without torch
can search) are merged into a running top-k, so memory is bounded by ``queries x chunk``
whatever the gallery's size. Ranking is exact and deterministic: a float32 distance widened to
float64 leaves its 29 lowest mantissa bits zero, so the sort key is that bit pattern OR the row's
position, i.e. distance first, then gallery order on exact ties (galleries up to 2**29 rows).

:func:`topk_accuracy` scores the results the way
:func:`~fct_registry.evaluation.retrieval_scores` scores CMC top-k (queries without any relevant
gallery item are skipped; ``exclude_ids`` is its leave-one-out), so both agree on the same data.
Query and gallery labels are compared by class name when the sides record names
(:func:`~fct_registry.evaluation.labels.align_labels`): a query folder without one class folder
numbers its other classes differently from the gallery's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fct_registry.evaluation.distances_np import NP_DISTANCES
from fct_registry.evaluation.labels import Classes, align_labels
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.errors import GalleryError, SchemaError
from fct_registry.gallery.reader import Gallery

POSITION_BITS = 29
MAX_ROWS = 1 << POSITION_BITS
BUDGET_BYTES = 128 * 2**20
BYTES_PER_PAIR = 24  # float32 distance + float64 key + its int64 view, per (query, row)


@dataclass(frozen=True)
class SearchResult:
    """The ``k`` nearest gallery rows of each query, nearest first (``-1``/None past the end)."""

    ids: np.ndarray  # object [q, k]
    distances: np.ndarray  # float32 [q, k]
    positions: np.ndarray  # int64 [q, k]: row number in the gallery (manifest order)
    labels: np.ndarray | None  # int64 [q, k] when the gallery has labels, else None
    distance: str
    gallery_version: int
    gallery_label_counts: dict[int, int] | None  # rows per label in the gallery
    excluded_labels: np.ndarray | None  # int64 [q]: label of the row excluded per query, or -1
    gallery_classes: Classes | None = None  # names the gallery's labels index, when recorded

    @property
    def k(self) -> int:
        return self.ids.shape[1]


def gallery_version(gallery: Gallery) -> int:
    """The one family version a searchable gallery holds."""
    versions = gallery.manifest.versions
    if len(versions) != 1:
        listed = ", ".join(f"{gallery.manifest.family}@{v}" for v in versions)
        raise GalleryError(
            f"{gallery.uri} mixes versions ({listed}); embeddings of different "
            "versions are not comparable: upgrade it to one version first "
            "(`fct upgrade`)"
        )
    return next(iter(versions))


def search(
    gallery: Gallery,
    queries: np.ndarray,
    *,
    k: int = 10,
    distance: str = "l2",
    exclude_ids: Sequence[str] | None = None,
    query_version: int | None = None,
    budget_bytes: int = BUDGET_BYTES,
) -> SearchResult:
    """The ``k`` nearest gallery rows of each query embedding (rows of ``queries``).

    ``exclude_ids[i]``: a gallery id that query ``i`` must not retrieve (the query's own item,
    for leave-one-out). ``query_version``: the family version that embedded the queries; it must
    be the gallery's (new-version queries need an upgraded gallery).
    """
    metric = NP_DISTANCES.build(distance)
    version = gallery_version(gallery)
    family = gallery.manifest.family
    if query_version is not None and query_version != version:
        raise GalleryError(
            f"the queries are {family}@{query_version} embeddings but "
            f"{gallery.uri} holds {family}@{version}; they are not comparable: "
            f"upgrade the gallery (`fct upgrade --gallery {gallery.uri} --to "
            f"{family}@{query_version} --out ...`)"
        )
    queries = np.require(np.asarray(queries, dtype=np.float32), requirements=["C", "W"])
    dims = {s.embedding_dim for s in gallery.manifest.shards}
    if queries.ndim != 2 or dims != {queries.shape[1]}:
        widths = "/".join(map(str, sorted(dims)))
        raise SchemaError(
            f"queries have shape {list(queries.shape)} but {gallery.uri} holds "
            f"{widths}-d embeddings; embed the queries with {family}@{version}"
        )
    if not np.isfinite(queries).all():
        raise SchemaError("queries hold NaN or infinite values; re-embed them")
    if k < 1:
        raise GalleryError(f"k must be at least 1, got {k}")
    rows = gallery.manifest.rows
    if rows > MAX_ROWS:
        raise GalleryError(
            f"{gallery.uri} has {rows} rows; search supports up to {MAX_ROWS} (split the gallery)"
        )
    if exclude_ids is not None and len(exclude_ids) != len(queries):
        raise GalleryError(
            f"{len(exclude_ids)} exclude_ids for {len(queries)} queries; pass one per query"
        )
    k = min(k, rows)
    n_q = len(queries)
    chunk = max(1, budget_bytes // (BYTES_PER_PAIR * max(n_q, 1)))
    exclude = None if exclude_ids is None else pa.array(list(exclude_ids), pa.string())

    keys = np.empty((n_q, 0), dtype=np.int64)
    ids = np.empty((n_q, 0), dtype=object)
    labels: np.ndarray | None = None
    label_counts: dict[int, int] | None = None
    excluded = np.full(n_q, -1, dtype=np.int64) if exclude is not None else None
    start = 0
    first_shard = gallery.manifest.shards[0]
    with gallery.shard(first_shard) as reader:
        has_labels = gallery_schema.LABEL in reader.schema.names
    columns = [gallery_schema.ID, gallery_schema.EMBEDDING] + (
        [gallery_schema.LABEL] if has_labels else []
    )
    if has_labels:
        labels, label_counts = np.empty((n_q, 0), dtype=np.int64), {}
    for batch in gallery.batches(chunk, columns):
        b = batch.num_rows
        g = gallery_schema.vectors(
            batch, gallery_schema.EMBEDDING, f"{gallery.uri} rows {start}..", dim=queries.shape[1]
        )
        batch_ids = np.asarray(batch.column(gallery_schema.ID).to_pylist(), dtype=object)
        batch_labels = None
        if has_labels:
            batch_labels = (
                batch.column(gallery_schema.LABEL).fill_null(-1).to_numpy().astype(np.int64)
            )
            values, counts = np.unique(batch_labels, return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                label_counts[v] = label_counts.get(v, 0) + c
        dist = metric(queries, g)
        np.maximum(dist, 0.0, out=dist)
        dist += 0.0  # no negative zero in the keys
        if exclude is not None:
            hit = pc.index_in(exclude, value_set=batch.column(gallery_schema.ID)).to_numpy(
                zero_copy_only=False
            )
            qi = np.flatnonzero(~np.isnan(hit.astype(np.float64)))
            if qi.size:
                rows_hit = hit[qi].astype(np.int64)
                dist[qi, rows_hit] = np.inf
                if batch_labels is not None:
                    excluded[qi] = batch_labels[rows_hit]
        chunk_keys = dist.astype(np.float64).view(np.int64)
        chunk_keys |= np.arange(start, start + b, dtype=np.int64)
        local = _smallest(chunk_keys, k)
        merged = np.concatenate([keys, np.take_along_axis(chunk_keys, local, axis=1)], axis=1)
        order = _smallest(merged, k)
        keys = np.take_along_axis(merged, order, axis=1)
        ids = np.take_along_axis(np.concatenate([ids, batch_ids[local]], axis=1), order, axis=1)
        if labels is not None and batch_labels is not None:
            labels = np.take_along_axis(
                np.concatenate([labels, batch_labels[local]], axis=1), order, axis=1
            )
        start += b

    mask = np.int64((1 << POSITION_BITS) - 1)
    positions = keys & mask
    distances = (keys & ~mask).view(np.float64).astype(np.float32)
    past_end = ~np.isfinite(distances)  # only excluded rows were left to fill the k slots
    positions[past_end], ids[past_end] = -1, None
    if labels is not None:
        labels[past_end] = -1
    return SearchResult(
        ids,
        distances,
        positions,
        labels,
        distance,
        version,
        label_counts,
        excluded,
        gallery.manifest.classes if has_labels else None,
    )


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` smallest keys of each row, smallest first. Keys are unique
    per row (the position bits), so the order is fully determined."""
    k = min(k, keys.shape[1])
    if k < keys.shape[1]:
        idx = np.argpartition(keys, k - 1, axis=1)[:, :k]
    else:
        idx = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
    order = np.argsort(np.take_along_axis(keys, idx, axis=1), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def topk_accuracy(
    result: SearchResult,
    query_labels: np.ndarray,
    ks: Sequence[int] = (1, 5),
    *,
    query_classes: Sequence[str] | None = None,
    query_name: str = "the queries",
    gallery_name: str = "the gallery",
) -> dict[str, float]:
    """CMC top-k in percent over the queries that have a relevant gallery row, as
    :func:`~fct_registry.evaluation.retrieval_scores` counts them; plus ``queries`` counted.

    ``query_classes``: the names ``query_labels`` index. A query and a gallery row are the same
    class when their names are equal (:func:`~fct_registry.evaluation.labels.align_labels`:
    both sides named, or neither; anything else is refused)."""
    if result.labels is None or result.gallery_label_counts is None:
        raise GalleryError(
            "the gallery has no label column, so accuracy is undefined; index "
            "it from labelled data (fct embed stores labels when it has them)"
        )
    if len(query_labels) != result.ids.shape[0]:
        raise GalleryError(f"{len(query_labels)} query labels for {result.ids.shape[0]} queries")
    # Every gallery id the scoring reads (results, per-label counts, excluded rows) in one array,
    # so one call aligns them all.
    counted_ids = np.fromiter(result.gallery_label_counts, np.int64)
    excluded = np.empty(0, np.int64) if result.excluded_labels is None else result.excluded_labels
    sizes = np.cumsum([result.labels.size, counted_ids.size])
    query_labels, gallery, _ = align_labels(
        query_labels,
        query_classes,
        np.concatenate([result.labels.reshape(-1), counted_ids, excluded]),
        result.gallery_classes,
        query_name=query_name,
        gallery_name=gallery_name,
    )
    found, counted_ids, excluded = np.split(gallery, sizes)
    counts: dict[int, int] = {}
    for label, n in zip(counted_ids.tolist(), result.gallery_label_counts.values(), strict=True):
        counts[label] = counts.get(label, 0) + n
    relevant = np.array([counts.get(int(lab), 0) for lab in query_labels])
    if result.excluded_labels is not None:
        relevant -= (excluded == query_labels).astype(np.int64)
    counted = relevant > 0
    if not counted.any():
        raise GalleryError(
            "no query has a relevant gallery row (same label), so accuracy is "
            "undefined; check that query and gallery labels use the same classes"
        )
    hits = found.reshape(result.labels.shape) == query_labels[:, None]
    out = {f"top{k}": 100.0 * float(hits[counted, :k].any(axis=1).mean()) for k in ks}
    out["queries"] = float(counted.sum())
    return out
