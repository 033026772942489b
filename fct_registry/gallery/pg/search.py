"""Top-k search through a gallery's view (HNSW or exact), and recall of HNSW against exact."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fct_registry.gallery.errors import GalleryError, NonFiniteError, SchemaError
from fct_registry.gallery.pg.catalogue import TableInfo, served
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.tables import DISTANCE_OPS

HNSW_EF_SEARCH = 40  # pgvector's default


def vector_literal(row: np.ndarray) -> str:
    """pgvector's text form; Python's repr of each float32 (as float64) parses back exactly."""
    return "[" + ",".join(map(repr, row.astype(np.float64).tolist())) + "]"


@dataclass(frozen=True)
class PgSearchResult:
    ids: np.ndarray  # object [q, k] (None past the end)
    distances: np.ndarray  # float32 [q, k]
    labels: np.ndarray | None  # int64 [q, k]
    seconds: float
    exact: bool

    @property
    def qps(self) -> float:
        return len(self.ids) / self.seconds if self.seconds > 0 else float("inf")


def search(
    conn: Any,
    loc: PgLocation,
    queries: np.ndarray,
    *,
    k: int = 10,
    exact: bool = False,
    ef_search: int | None = None,
    exclude_ids: list[str] | None = None,
    info: TableInfo | None = None,
) -> PgSearchResult:
    """Top-``k`` of each query through the gallery's view: HNSW (``ef_search`` candidates, the
    index's default 40 when None) or exact (index scans off: a sequential scan and a top-k sort).
    ``exclude_ids[i]``: an id query ``i`` must not return (its own item)."""
    info = info or served(conn, loc)
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != info.embedding_dim:
        raise SchemaError(
            f"queries have shape {list(queries.shape)} but {loc.uri} holds "
            f"{info.embedding_dim}-d embeddings ({info.family}@"
            f"{'/'.join(map(str, info.versions))}); embed the queries with that version"
        )
    if not np.isfinite(queries).all():
        raise NonFiniteError("queries hold NaN or infinite values; re-embed them")
    if k < 1:
        raise GalleryError(f"k must be at least 1, got {k}")
    if ef_search is not None and not 1 <= ef_search <= 1000:
        raise GalleryError(f"ef_search must be in 1..1000 (pgvector's range), got {ef_search}")
    op = DISTANCE_OPS[info.distance][1]
    extra = 0 if exclude_ids is None else 1
    sql = (
        f"SELECT id, embedding {op} %s::vector, label FROM {loc.gallery} "
        f"ORDER BY embedding {op} %s::vector LIMIT {k + extra}"
    )
    n = len(queries)
    ids = np.full((n, k), None, dtype=object)
    dists = np.full((n, k), np.inf, dtype=np.float32)
    labels = np.full((n, k), -1, dtype=np.int64)
    if not conn.autocommit:
        conn.rollback()  # a fresh transaction for the SET LOCALs below
    start = time.perf_counter()
    with conn.cursor() as cur:
        if conn.autocommit:
            cur.execute("BEGIN")
        try:
            if exact:
                cur.execute("SET LOCAL enable_indexscan = off")
                cur.execute("SET LOCAL enable_bitmapscan = off")
            elif ef_search is not None:
                cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
            for i, q in enumerate(queries):
                text = vector_literal(q)
                cur.execute(sql, (text, text))
                got = [r for r in cur.fetchall() if exclude_ids is None or r[0] != exclude_ids[i]]
                for j, (rid, dist, label) in enumerate(got[:k]):
                    ids[i, j], dists[i, j] = rid, dist
                    labels[i, j] = -1 if label is None else label
        finally:
            cur.execute("COMMIT")
    seconds = time.perf_counter() - start
    return PgSearchResult(ids, dists, labels if info.labels else None, seconds, exact)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ids, None = empty)."""
    scores = []
    for a, e in zip(approx, exact, strict=True):
        truth = {x for x in e if x is not None}
        if truth:
            scores.append(len(truth & {x for x in a if x is not None}) / len(truth))
    return float(np.mean(scores)) if scores else float("nan")
