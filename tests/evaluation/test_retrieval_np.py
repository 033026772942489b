"""The NumPy retrieval metrics (``fct evaluate`` on the core install) against the naive loop
(the oracle of tests/evaluation/test_retrieval.py) and the torch implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation.retrieval import retrieval_scores
from fct_registry.evaluation.retrieval_np import retrieval_scores_np
from tests.evaluation.test_retrieval import CASES, _random_case, naive_retrieval_scores


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize(("seed", "n_query", "n_gallery", "dim", "n_classes", "chunk"), CASES)
def test_matches_naive_loop_and_torch(
    distance: str, seed: int, n_query: int, n_gallery: int, dim: int, n_classes: int, chunk: int
) -> None:
    q, g, ql, gl = (t.numpy() for t in _random_case(seed, n_query, n_gallery, dim, n_classes))
    got = retrieval_scores_np(q, g, ql, gl, distance=distance, chunk_size=chunk)
    assert list(got) == ["top1", "top5", "mAP"]
    assert got == pytest.approx(naive_retrieval_scores(q, g, ql, gl, distance=distance), abs=1e-4)
    torch_scores = retrieval_scores(
        *(torch.from_numpy(x) for x in (q, g, ql, gl)), distance=distance, chunk_size=chunk
    )
    assert got == pytest.approx(torch_scores.as_dict(), abs=1e-6)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("chunk", [2, 7, None])
def test_leave_one_out_matches_naive_loop(distance: str, chunk: int | None) -> None:
    emb, _, labels, _ = (t.numpy() for t in _random_case(12, 25, 1, 6, 4))
    got = retrieval_scores_np(
        emb, emb, labels, labels, distance=distance, leave_one_out=True, chunk_size=chunk
    )
    want = naive_retrieval_scores(emb, emb, labels, labels, distance=distance, leave_one_out=True)
    assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_hand_computed_example(chunk: int | None) -> None:
    # As in test_retrieval.py: gallery item j at distance j+1 from every query.
    gallery = np.array([[float(p), 0.0] for p in range(1, 8)], dtype=np.float32)
    got = retrieval_scores_np(
        np.zeros((4, 2), dtype=np.float32),
        gallery,
        np.array([0, 1, 2, 3]),
        np.array([0, 1, 0, 1, 1, 1, 2]),
        chunk_size=chunk,
    )
    assert got["top1"] == pytest.approx(100 / 3)
    assert got["top5"] == pytest.approx(200 / 3)
    assert got["mAP"] == pytest.approx(100 * (5 / 6 + 17 / 30 + 1 / 7) / 3)


def test_exact_ties_rank_irrelevant_items_first() -> None:
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    query = np.zeros((1, 2), np.float32)
    got = retrieval_scores_np(query, gallery, np.array([0]), np.array([0, 1]))
    assert got == {"top1": 0.0, "top5": 100.0, "mAP": 50.0}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"distance": "manhattan"}, ConfigError, "unknown distance 'manhattan'"),
        ({"chunk_size": 0}, ConfigError, "chunk_size must be a positive number"),
        ({"gallery": np.zeros((5, 4), np.float32)}, DataError, "3-d but gallery .* 4-d"),
        ({"query": np.full((2, 3), np.nan, np.float32)}, DataError, "NaN or inf in 2 row"),
        ({"query_labels": np.array([0.5, 1.0])}, DataError, "integer class ids"),
        ({"query_labels": np.array([0, 1, 2])}, DataError, "one per embedding row"),
        ({"leave_one_out": True}, DataError, "leave_one_out treats query and gallery"),
        ({"gallery_labels": np.array([7, 7, 7, 7, 7])}, DataError, "no query has a relevant"),
    ],
)
def test_bad_inputs_name_the_problem(change: dict, error: type, match: str) -> None:
    kwargs = {
        "query": np.zeros((2, 3), np.float32),
        "gallery": np.ones((5, 3), np.float32),
        "query_labels": np.array([0, 1]),
        "gallery_labels": np.array([0, 1, 0, 1, 0]),
    } | change
    with pytest.raises(error, match=match):
        retrieval_scores_np(**kwargs)
