"""Retrieval metrics (CMC top-1/top-5 and mAP) over (query, gallery) embeddings.

Vectorised and chunked over queries: each chunk computes its distances to the whole gallery,
sorts them once (with relevance packed into the sort keys), and reads both CMC and AP off that
one ranking, so no per-query Python loop runs and memory stays bounded by ``auto_chunk_size``
however large the gallery is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np
import torch
from torch import Tensor

from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation.distances import DISTANCES, DistanceFn
from fct_registry.evaluation.distances_np import check_query_gallery
from fct_registry.evaluation.retrieval_np import scores_from_totals

CHUNK_BUDGET_BYTES = 256 * 2**20
"""Target size of one chunk's (chunk x gallery) working tensors."""

BYTES_PER_PAIR = 20
"""Working bytes per (query, gallery) pair on the CPU, rounded up. Live at the peaks: relevance
bool (1) + int64 keys (8) + relevance cast to int64 for the OR (8) = 17; keys + their sorted
copy = 16; sorted keys (8) + f32 hits (4) + f32 running count (4) = 16."""

BYTES_PER_PAIR_ACCELERATOR = 64
"""The same on CUDA (and, untested, other devices), where ``torch.sort`` also returns int64
indices and needs scratch buffers: peak allocation measured at 64 B/pair on an H100 (chunks of
20 to 100 queries against 100k items, torch 2.11)."""

CMC_KS = (1, 5)


@dataclass(frozen=True)
class RetrievalScores:
    """Retrieval quality, all in percent (0..100)."""

    top1: float
    top5: float
    mAP: float  # the metric's conventional spelling, also the JSON key

    def as_dict(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5, "mAP": self.mAP}


def auto_chunk_size(
    gallery_size: int,
    budget_bytes: int = CHUNK_BUDGET_BYTES,
    device: torch.device | str = "cpu",
) -> int:
    """Number of queries per chunk so that a chunk's working tensors fit in ``budget_bytes``."""
    per_pair = BYTES_PER_PAIR if torch.device(device).type == "cpu" else BYTES_PER_PAIR_ACCELERATOR
    return max(1, budget_bytes // (per_pair * max(gallery_size, 1)))


class Ranking(TypedDict, total=False):
    """How queries are ranked, shared by :func:`retrieval_scores` and the per-query scores."""

    distance: str  # a DISTANCES name; default "l2"
    leave_one_out: bool  # query i is gallery item i and never retrieves itself; default False
    chunk_size: int | None  # queries ranked at once; default None: from CHUNK_BUDGET_BYTES


def ranking_options(ranking: Ranking) -> tuple[DistanceFn, bool, int | None]:
    """``ranking`` with its defaults applied and checked: (distance, leave-one-out, chunk)."""
    chunk_size = ranking.get("chunk_size")
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(
            f"chunk_size must be a positive number of queries, got {chunk_size}; "
            "pass None to size chunks from the memory budget"
        )
    distance_fn = DISTANCES.build(ranking.get("distance", "l2"))
    return distance_fn, ranking.get("leave_one_out", False), chunk_size


@torch.no_grad()  # metrics only: inputs straight from a model may require grad
def retrieval_scores(
    query: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    device: torch.device | str | None = None,
    **ranking: Unpack[Ranking],
) -> RetrievalScores:
    """CMC top-1, top-5 and mAP (percent) of retrieving ``gallery`` items for each ``query``.

    * top-k: percent of queries whose k nearest gallery items include one of the query's label
      (k is capped at the gallery size).
    * mAP: mean over queries of AP over the full gallery ranking, AP being the mean over the
      query's relevant gallery items of the precision at that item's rank.
    * ``leave_one_out``: query and gallery are the same items (pass the same tensors twice);
      item i never retrieves itself.
    * Queries with no relevant gallery item (no gallery item shares their label, or in
      leave-one-out mode their class has a single item) are skipped by all three metrics, since
      neither CMC nor AP is defined for them.
    * Distances are computed in float32 on ``device`` (default: the query's device). Exact
      float32 ties are common in large galleries (about 20 per query in the 10k-item benchmark);
      a tie ranks the irrelevant items first: deterministic, and for a tie with one relevant
      item the same AP as sklearn's. Against float64 distances this moved the benchmark's mAP
      by 3e-5 percentage points.
    * ``chunk_size`` queries are scored at a time; ``None`` picks it so the (chunk x gallery)
      tensors fit in ``CHUNK_BUDGET_BYTES``. Inputs are moved to ``device`` whole, and cosine
      also makes one normalised gallery copy per chunk; nothing else grows with the data.

    Raises ``DataError`` for malformed or inconsistent inputs and ``ConfigError`` for an unknown
    ``distance`` or a non-positive ``chunk_size``.
    """
    distance_fn, leave_one_out, chunk_size = ranking_options(ranking)
    _check_embeddings("query", query)
    _check_embeddings("gallery", gallery)
    check_query_gallery(query, gallery)
    _check_labels("query", query_labels, len(query))
    _check_labels("gallery", gallery_labels, len(gallery))

    dev = torch.device(device) if device is not None else query.device
    same_gallery = gallery is query
    query = query.to(dev, torch.float32)
    gallery = query if same_gallery else gallery.to(dev, torch.float32)
    query_labels = query_labels.to(dev)
    gallery_labels = gallery_labels.to(dev)
    _check_finite("query", query)
    if not same_gallery:
        _check_finite("gallery", gallery)
    if leave_one_out:
        _check_leave_one_out(query, gallery, query_labels, gallery_labels, same_gallery)

    # Summed over chunks on the device, read once at the end (no host sync per chunk).
    totals = torch.zeros(4, dtype=torch.float64, device=dev)  # top1 hits, top5 hits, AP, counted
    for ranked in ranked_chunks(
        distance_fn, query, gallery, query_labels, gallery_labels, chunk_size, leave_one_out
    ):
        totals += _score_ranked(ranked)
        del ranked  # free it before the next chunk is ranked

    return RetrievalScores(**scores_from_totals(totals.tolist(), leave_one_out))


def ranked_chunks(
    distance_fn: DistanceFn,
    query: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    chunk_size: int | None,
    leave_one_out: bool,
) -> Iterator[Tensor]:
    """Every query's ranking, ``chunk_size`` queries at a time (None: sized by
    :func:`auto_chunk_size` for the query's device) and in query order: each chunk's sorted keys
    (c, g), relevance in the lowest bit (:func:`_ranking_keys`). Shared by the summed scores
    here and the per-query ones (:mod:`.per_query`)."""
    step = chunk_size or auto_chunk_size(len(gallery), device=query.device)
    for start in range(0, len(query), step):
        stop = min(start + step, len(query))
        yield _sort_rows(  # nested: the unsorted keys are freed as soon as they are sorted
            _ranking_keys(
                distance_fn(query[start:stop], gallery),
                query_labels[start:stop, None] == gallery_labels[None, :],
                self_offset=start if leave_one_out else None,
            )
        )


def _ranking_keys(dist: Tensor, relevant: Tensor, self_offset: int | None) -> Tensor:
    """Sort keys that carry relevance, so sorting values alone (no argsort + gather) ranks it.

    ``dist`` (c, g) float32 and ``relevant`` (c, g) bool, both overwritten. A non-negative
    float64 read as int64 orders like the float, and a float32 widened to float64 leaves the 29
    lowest mantissa bits zero, so the key is that bit pattern with its lowest bit set to the
    relevance flag: the ranking is exactly the float32 one, and an exact tie puts the irrelevant
    item first (pessimistic, and the same on every device since equal keys are interchangeable).
    ``self_offset``: leave-one-out; query row i is gallery item ``self_offset + i``, which is
    moved to the end and not counted as relevant.
    """
    if self_offset is not None:
        rows = torch.arange(len(dist), device=dist.device)
        dist[rows, rows + self_offset] = float("inf")
        relevant[rows, rows + self_offset] = False
    keys = dist.clamp_(min=0.0).double().view(torch.int64)  # clamp: cosine can round to -1e-7
    del dist  # the caller passes a temporary: free it before the OR casts relevant to int64
    return keys.bitwise_or_(relevant)


def _sort_rows(keys: Tensor) -> Tensor:
    if keys.device.type == "cpu":
        # NumPy's SIMD sort (x86-simd-sort / Highway) beats torch's CPU sort ~1.6x on these keys.
        return torch.from_numpy(np.sort(keys.numpy(), axis=1))
    return keys.sort(dim=1).values


def _score_ranked(ranked: Tensor) -> Tensor:
    """Sums over a chunk's queries: ``[top1 hits, top5 hits, AP, queries counted]`` (float64).

    ``ranked`` (c, g): each row's keys in ascending order, overwritten. The full ranking is
    what AP needs, and CMC reads its first k columns, so a separate ``topk`` would only repeat
    the work.
    """
    n_gallery = ranked.shape[1]
    # float32 counts (below) are exact up to 2**24 items; float64 beyond.
    count_dtype = torch.float32 if n_gallery <= 2**24 else torch.float64
    # hits[i, r] = 1 if the gallery item at rank r + 1 is relevant to query i.
    hits = ranked.bitwise_and_(1).to(count_dtype)
    cmc = [hits[:, : min(k, n_gallery)].amax(dim=1).sum() for k in CMC_KS]
    found = hits.cumsum(dim=1)  # relevant items ranked at or above each rank
    n_relevant = found[:, -1].to(torch.float64, copy=True)  # a copy: found is overwritten next
    # AP * n_relevant = sum over relevant ranks r of found[r] / r: one matrix-vector product.
    inv_rank = 1.0 / torch.arange(1, n_gallery + 1, dtype=count_dtype, device=ranked.device)
    ap = (found.mul_(hits) @ inv_rank).double() / n_relevant.clamp(min=1.0)
    counted = (n_relevant > 0).sum()
    return torch.stack([cmc[0], cmc[1], ap.sum(), counted]).double()


def _check_embeddings(name: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise DataError(
            f"{name} embeddings must be a torch.Tensor, got {type(x).__name__}; "
            "convert arrays with torch.from_numpy"
        )
    if x.ndim != 2:
        raise DataError(
            f"{name} embeddings must be a 2-D (n, dim) tensor, got shape {tuple(x.shape)}; "
            "put one embedding per row"
        )
    if not x.is_floating_point():
        raise DataError(
            f"{name} embeddings must be floating point, got {x.dtype}; "
            "pass the model's float outputs (or cast with .float())"
        )
    if x.numel() == 0:
        raise DataError(
            f"{name} embeddings are empty (shape {tuple(x.shape)}); pass at least one embedding"
        )


def _check_finite(name: str, x: Tensor) -> None:
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten()
        raise DataError(
            f"{name} embeddings contain NaN or inf in {len(rows)} row(s) (first: row "
            f"{int(rows[0])}); fix the embedding model or drop those items before evaluating"
        )


def _check_labels(name: str, labels: object, n_rows: int) -> None:
    if not isinstance(labels, Tensor):
        raise DataError(
            f"{name} labels must be a torch.Tensor, got {type(labels).__name__}; "
            "convert arrays with torch.from_numpy"
        )
    if labels.ndim != 1:
        raise DataError(
            f"{name} labels must be 1-D (one class id per embedding), got shape "
            f"{tuple(labels.shape)}; flatten them with .reshape(-1)"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise DataError(
            f"{name} labels must be integer class ids, got {labels.dtype}; "
            "map classes to integers (e.g. with numpy.unique(..., return_inverse=True))"
        )
    if len(labels) != n_rows:
        raise DataError(
            f"{name} labels have {len(labels)} entries but there are {n_rows} {name} "
            "embeddings; pass exactly one label per embedding row"
        )


def _check_leave_one_out(
    query: Tensor, gallery: Tensor, query_labels: Tensor, gallery_labels: Tensor, same: bool
) -> None:
    """Leave-one-out excludes the diagonal: row i of query and gallery must be the same *item*.

    The embeddings may differ (a new-model query against an upgraded old-model gallery of the same
    images is the paper's cross-version case); the items, hence counts and labels, may not.
    """
    fix = "pass one row per item, in the same order, for query and gallery, or drop leave_one_out"
    if len(query) != len(gallery):
        raise DataError(
            f"leave_one_out treats query and gallery as the same items, but there are "
            f"{len(query)} query and {len(gallery)} gallery embeddings; {fix}"
        )
    if not torch.equal(query_labels, gallery_labels):
        raise DataError(
            f"leave_one_out treats query and gallery as the same items, but their labels "
            f"differ; {fix}"
        )
