"""Per-query retrieval outcomes (top-1 hit, top-5 hit, AP), the inputs of a paired bootstrap.

Same ranking as :func:`~fct_registry.evaluation.retrieval.retrieval_scores` (its sort keys and
tie rule), chunked the same way, but each query's outcome is returned instead of the sums, so
two systems scored on the same queries can be compared query by query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
from torch import Tensor

from fct_registry.errors import DataError
from fct_registry.evaluation.distances_np import check_query_gallery
from fct_registry.evaluation.retrieval import Ranking, ranked_chunks, ranking_options


@dataclass(frozen=True)
class PerQuery:
    """Per-query outcomes (float64, 0/1 hits and AP in [0, 1]) for the queries that count:
    those with at least one relevant gallery item (``index`` gives their rows)."""

    top1: Tensor
    top5: Tensor
    ap: Tensor
    index: Tensor

    def means(self) -> dict[str, float]:
        """Percent, as :class:`RetrievalScores` reports them."""
        return {
            "top1": 100.0 * float(self.top1.mean()),
            "top5": 100.0 * float(self.top5.mean()),
            "mAP": 100.0 * float(self.ap.mean()),
        }

    def metric(self, name: str) -> Tensor:
        return {"top1": self.top1, "top5": self.top5, "mAP": self.ap}[name]


@torch.no_grad()
def per_query_scores(
    query: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    **ranking: Unpack[Ranking],
) -> PerQuery:
    """Each query's top-1 hit, top-5 hit and AP (see ``retrieval_scores`` for the definitions)."""
    distance_fn, leave_one_out, chunk_size = ranking_options(ranking)
    check_query_gallery(query, gallery)
    if leave_one_out and len(query) != len(gallery):
        raise DataError(
            f"leave_one_out treats query and gallery as the same items, but there are "
            f"{len(query)} query and {len(gallery)} gallery embeddings; pass one row per item"
        )
    query, gallery = query.float().cpu(), gallery.float().cpu()
    query_labels, gallery_labels = query_labels.cpu(), gallery_labels.cpu()
    top1, top5, ap, n_rel = [], [], [], []
    for ranked in ranked_chunks(
        distance_fn, query, gallery, query_labels, gallery_labels, chunk_size, leave_one_out
    ):
        hits = ranked.bitwise_and_(1).double()
        del ranked
        top1.append(hits[:, :1].amax(1))
        top5.append(hits[:, : min(5, hits.shape[1])].amax(1))
        found = hits.cumsum(1)
        relevant = found[:, -1].clone()
        inv_rank = 1.0 / torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
        ap.append((found.mul_(hits) @ inv_rank) / relevant.clamp(min=1.0))
        n_rel.append(relevant)
    counted = torch.cat(n_rel) > 0
    if not counted.any():
        raise DataError("no query has a relevant gallery item, so no score is defined")
    return PerQuery(
        torch.cat(top1)[counted],
        torch.cat(top5)[counted],
        torch.cat(ap)[counted],
        counted.nonzero().flatten(),
    )
