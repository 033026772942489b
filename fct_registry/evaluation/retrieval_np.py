"""Retrieval metrics (CMC top-1/top-5 and mAP) in NumPy, for the core install (no torch).

The same algorithm as :func:`fct_registry.evaluation.retrieval.retrieval_scores` (relevance
packed into float64-bit sort keys, one sort per chunk of queries, CMC and AP read off that one
ranking), on the CPU over NumPy arrays. ``fct evaluate`` runs it on a gallery machine without
torch; tests check it against the torch version and a plain loop. Training and the DVC stages
keep the torch version, so tracked outputs do not move.
"""

from __future__ import annotations

import numpy as np

from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation.distances_np import (
    NP_DISTANCES,
    check_query_gallery,
    pairwise_distance,
)

CHUNK_BUDGET_BYTES = 256 * 2**20
BYTES_PER_PAIR = 24  # f32 distance + int64 keys + their sorted copy, per (query, gallery) pair
CMC_KS = (1, 5)


def retrieval_scores_np(
    query: np.ndarray,
    gallery: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    distance: str = "l2",
    leave_one_out: bool = False,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """``{"top1", "top5", "mAP"}`` in percent, defined exactly as the torch version's
    ``RetrievalScores`` (queries without a relevant gallery item are skipped; an exact distance
    tie ranks the irrelevant item first; ``leave_one_out`` never retrieves item i for query i).
    """
    NP_DISTANCES.check(distance)
    query = _embeddings("query", query)
    gallery = _embeddings("gallery", gallery)
    check_query_gallery(query, gallery)
    query_labels = _labels("query", query_labels, len(query))
    gallery_labels = _labels("gallery", gallery_labels, len(gallery))
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(
            f"chunk_size must be a positive number of queries, got {chunk_size}; "
            "pass None to size chunks from the memory budget"
        )
    if leave_one_out and (
        len(query) != len(gallery) or not np.array_equal(query_labels, gallery_labels)
    ):
        raise DataError(
            "leave_one_out treats query and gallery as the same items, but their counts or "
            "labels differ; pass one row per item, in the same order, for query and gallery, "
            "or drop leave_one_out"
        )
    n_query, n_gallery = len(query), len(gallery)
    step = chunk_size or max(1, CHUNK_BUDGET_BYTES // (BYTES_PER_PAIR * n_gallery))
    totals = np.zeros(4, dtype=np.float64)  # top1 hits, top5 hits, AP, queries counted
    for start in range(0, n_query, step):
        stop = min(start + step, n_query)
        dist = pairwise_distance(query[start:stop], gallery, distance)
        relevant = query_labels[start:stop, None] == gallery_labels[None, :]
        if leave_one_out:
            rows = np.arange(stop - start)
            dist[rows, rows + start] = np.inf
            relevant[rows, rows + start] = False
        # A non-negative float64 read as int64 orders like the float; a widened float32 leaves
        # the lowest mantissa bit zero, so it carries the relevance flag (ties: irrelevant first).
        np.maximum(dist, 0.0, out=dist)
        keys = dist.astype(np.float64).view(np.int64)
        keys |= relevant
        keys.sort(axis=1)
        totals += _score_ranked(keys)
    return scores_from_totals(totals.tolist(), leave_one_out)


def scores_from_totals(totals: list[float], leave_one_out: bool) -> dict[str, float]:
    """Percent scores from summed ``[top1 hits, top5 hits, AP, queries counted]``; shared with
    the torch version, so both define the scores (and refuse an empty count) alike."""
    top1_hits, top5_hits, ap_sum, counted = totals
    if counted == 0:
        hint = (
            "every class needs at least 2 items in leave-one-out mode"
            if leave_one_out
            else "check that query and gallery labels use the same class ids"
        )
        raise DataError(f"no query has a relevant gallery item, so no score is defined; {hint}")
    return {
        "top1": 100.0 * top1_hits / counted,
        "top5": 100.0 * top5_hits / counted,
        "mAP": 100.0 * ap_sum / counted,
    }


def _score_ranked(ranked: np.ndarray) -> np.ndarray:
    """``[top1 hits, top5 hits, AP sum, queries counted]`` of a chunk's sorted keys (c, g)."""
    n_gallery = ranked.shape[1]
    count_dtype = np.float32 if n_gallery <= 2**24 else np.float64  # exact counts either way
    hits = (ranked & 1).astype(count_dtype)
    cmc = [hits[:, : min(k, n_gallery)].max(axis=1).sum(dtype=np.float64) for k in CMC_KS]
    found = hits.cumsum(axis=1, dtype=count_dtype)
    n_relevant = found[:, -1].astype(np.float64)
    inv_rank = 1.0 / np.arange(1, n_gallery + 1, dtype=count_dtype)
    ap = (found * hits) @ inv_rank
    ap = ap.astype(np.float64) / np.maximum(n_relevant, 1.0)
    return np.array([cmc[0], cmc[1], ap.sum(), (n_relevant > 0).sum()], dtype=np.float64)


def _embeddings(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.size == 0 or x.dtype.kind != "f":
        raise DataError(
            f"{name} embeddings must be a non-empty 2-D float (n, dim) array, got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}; save one float embedding per row"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(
            f"{name} embeddings contain NaN or inf in {len(rows)} row(s) (first: row "
            f"{int(rows[0])}); fix the embedding model or drop those items before evaluating"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def _labels(name: str, labels: np.ndarray, n_rows: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != n_rows:
        raise DataError(
            f"{name} labels must be 1-D integer class ids, one per embedding row ({n_rows}), "
            f"got shape {tuple(labels.shape)} and dtype {labels.dtype}; map classes to "
            "integers (numpy.unique(..., return_inverse=True))"
        )
    return labels
