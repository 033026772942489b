"""Retrieval evaluation: pairwise distances and CMC / mAP metrics over (query, gallery) tensors."""

from fct_registry.evaluation.distances import (
    DISTANCES,
    DistanceFn,
    cosine_distance,
    l2_distance,
    pairwise_distance,
)
from fct_registry.evaluation.retrieval import (
    RetrievalScores,
    auto_chunk_size,
    retrieval_scores,
)

__all__ = [
    "DISTANCES",
    "DistanceFn",
    "RetrievalScores",
    "auto_chunk_size",
    "cosine_distance",
    "l2_distance",
    "pairwise_distance",
    "retrieval_scores",
]
