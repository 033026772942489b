"""Retrieval metrics (CMC top-1/top-5 and mAP) over (query, gallery) embeddings.

Vectorised and chunked over queries: each chunk computes its distances to the whole gallery,
sorts them once, and reads both CMC and AP off that one ranking, so no per-query Python loop
runs and memory stays bounded by ``auto_chunk_size`` however large the gallery is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation.distances import DISTANCES, check_query_gallery

CHUNK_BUDGET_BYTES = 256 * 2**20
"""Target size of one chunk's (chunk x gallery) working tensors."""

BYTES_PER_PAIR = 32
"""Working bytes per (query, gallery) pair, with headroom for temporaries. Live at the peak:
relevance bool (1) + distances/keys i32 (4, in place) + sorted keys i32 (4) + the distance
matmul's broadcast temporary f32 (4) or, later, ranked relevance bool (1) + hit count i32 (4)
+ precision f32 (4)."""

CMC_KS = (1, 5)


@dataclass(frozen=True)
class RetrievalScores:
    """Retrieval quality, all in percent (0..100)."""

    top1: float
    top5: float
    mAP: float  # the metric's conventional spelling, also the JSON key

    def as_dict(self) -> dict[str, float]:
        return {"top1": self.top1, "top5": self.top5, "mAP": self.mAP}


def auto_chunk_size(gallery_size: int, budget_bytes: int = CHUNK_BUDGET_BYTES) -> int:
    """Number of queries per chunk so that a chunk's working tensors fit in ``budget_bytes``."""
    return max(1, budget_bytes // (BYTES_PER_PAIR * max(gallery_size, 1)))


@torch.no_grad()  # metrics only: inputs straight from a model may require grad
def retrieval_scores(
    query: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    *,
    distance: str = "l2",
    leave_one_out: bool = False,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
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
    * Distances are computed in float32 on ``device`` (default: the query's device). Distances
      equal to within one float32 ulp tie, and ties rank irrelevant items first (pessimistic,
      deterministic); with continuous embeddings they practically never occur.
    * ``chunk_size`` queries are scored at a time; ``None`` picks it from ``CHUNK_BUDGET_BYTES``.
      Tensors are moved to ``device`` whole; only the (chunk x gallery) work is bounded.

    Raises ``DataError`` for malformed or inconsistent inputs and ``ConfigError`` for an unknown
    ``distance`` or a non-positive ``chunk_size``.
    """
    distance_fn = DISTANCES.build(distance)
    _check_embeddings("query", query)
    _check_embeddings("gallery", gallery)
    check_query_gallery(query, gallery)
    _check_labels("query", query_labels, len(query))
    _check_labels("gallery", gallery_labels, len(gallery))
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(
            f"chunk_size must be a positive number of queries, got {chunk_size}; "
            "pass None to size chunks from the memory budget"
        )

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

    n_query, n_gallery = len(query), len(gallery)
    step = chunk_size or auto_chunk_size(n_gallery)
    # Summed over chunks on the device, read once at the end (no host sync per chunk).
    totals = torch.zeros(4, dtype=torch.float64, device=dev)  # top1 hits, top5 hits, AP, counted
    for start in range(0, n_query, step):
        stop = min(start + step, n_query)
        dist = distance_fn(query[start:stop], gallery)
        relevant = query_labels[start:stop, None] == gallery_labels[None, :]
        if leave_one_out:
            rows = torch.arange(stop - start, device=dev)
            dist[rows, rows + start] = float("inf")
            relevant[rows, rows + start] = False
        totals += _score_chunk(dist, relevant)

    top1_hits, top5_hits, ap_sum, counted = totals.tolist()
    if counted == 0:
        hint = (
            "every class needs at least 2 items in leave-one-out mode"
            if leave_one_out
            else "check that query and gallery labels use the same class ids"
        )
        raise DataError(f"no query has a relevant gallery item, so no score is defined; {hint}")
    return RetrievalScores(
        top1=100.0 * top1_hits / counted,
        top5=100.0 * top5_hits / counted,
        mAP=100.0 * ap_sum / counted,
    )


def _score_chunk(dist: Tensor, relevant: Tensor) -> Tensor:
    """Sums over one chunk's queries: ``[top1 hits, top5 hits, AP, queries counted]`` (float64).

    ``dist`` (c, g) float32, overwritten; ``relevant`` (c, g) bool. One values-only sort of
    ``_ranking_keys`` gives each query's full ranked relevance: AP needs all of it, and CMC reads
    its first k columns, so a separate ``topk`` would only repeat work.
    """
    n_relevant = relevant.sum(dim=1)
    hits = _sort_rows(_ranking_keys(dist, relevant)).bitwise_and_(1).bool()
    # hits[i, r]: the gallery item at rank r + 1 is relevant to query i.
    cmc = [hits[:, : min(k, hits.shape[1])].any(dim=1) for k in CMC_KS]
    # Precision at rank r = (relevant items ranked <= r) / r, kept only at relevant ranks.
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float32)
    precision = hits.cumsum(dim=1, dtype=torch.int32).float().div_(ranks).mul_(hits)
    ap = precision.sum(dim=1).double() / n_relevant.clamp(min=1)
    return torch.stack(
        [
            cmc[0].sum().double(),
            cmc[1].sum().double(),
            ap.sum(),
            (n_relevant > 0).sum().double(),
        ]
    )


def _ranking_keys(dist: Tensor, relevant: Tensor) -> Tensor:
    """Sort keys that carry relevance, so sorting values alone (no argsort + gather) ranks it.

    A non-negative float32 read as int32 orders like the float, so the key is the distance's bit
    pattern with its lowest mantissa bit replaced by the relevance flag. That costs one ulp of
    resolution: distances within an ulp tie, and a tie puts the irrelevant item first
    (pessimistic, and the same on every device since equal keys are interchangeable).
    """
    keys = dist.clamp_(min=0.0).view(torch.int32)  # clamp: cosine can round to -1e-7
    return keys.bitwise_and_(-2).bitwise_or_(relevant)


def _sort_rows(keys: Tensor) -> Tensor:
    if keys.device.type == "cpu":
        # NumPy's SIMD sort (x86-simd-sort / Highway) is ~3x faster than torch's CPU sort here.
        return torch.from_numpy(np.sort(keys.numpy(), axis=1))
    return keys.sort(dim=1).values


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
    """Leave-one-out excludes the diagonal, which is only meaningful if gallery == query."""
    fix = "pass the same embeddings and labels as query and gallery, or drop leave_one_out"
    if len(query) != len(gallery):
        raise DataError(
            f"leave_one_out treats query and gallery as the same items, but there are "
            f"{len(query)} query and {len(gallery)} gallery embeddings; {fix}"
        )
    if not same and not torch.equal(query, gallery):
        raise DataError(
            f"leave_one_out treats query and gallery as the same items, but their embeddings "
            f"differ; {fix}"
        )
    if not torch.equal(query_labels, gallery_labels):
        raise DataError(
            f"leave_one_out treats query and gallery as the same items, but their labels "
            f"differ; {fix}"
        )
