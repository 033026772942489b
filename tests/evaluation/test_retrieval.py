"""Vectorised retrieval metrics against a naive per-query loop and a hand-computed example."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score

from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation.retrieval import (
    BYTES_PER_PAIR,
    BYTES_PER_PAIR_ACCELERATOR,
    CHUNK_BUDGET_BYTES,
    RetrievalScores,
    _ranking_keys,
    _sort_rows,
    auto_chunk_size,
    retrieval_scores,
)


def naive_retrieval_scores(
    query: ArrayLike,
    gallery: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    *,
    distance: str = "l2",
    leave_one_out: bool = False,
) -> dict[str, float]:
    """The oracle: one query at a time, distances from their definition in float64, numpy
    argsort for CMC and sklearn's average_precision_score for AP. Deliberately slow and plain.
    (benchmarks/bench_evaluation.py times this same function.)"""
    q = np.asarray(query, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    q_labels, g_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    top1 = top5 = ap_sum = 0.0
    counted = 0
    for i in range(len(q)):
        if distance == "l2":
            dist = np.sqrt(((g - q[i]) ** 2).sum(axis=1))
        elif distance == "cosine":
            dist = 1.0 - (g @ q[i]) / (np.linalg.norm(g, axis=1) * np.linalg.norm(q[i]))
        else:
            raise ValueError(distance)
        relevant = g_labels == q_labels[i]
        if leave_one_out:
            keep = np.arange(len(g)) != i
            dist, relevant = dist[keep], relevant[keep]
        if not relevant.any():
            continue  # no relevant gallery item: skipped, as documented
        counted += 1
        order = np.argsort(dist, kind="stable")
        top1 += float(relevant[order[0]])
        top5 += float(relevant[order[:5]].any())
        ap_sum += average_precision_score(relevant, -dist)
    return {
        "top1": 100 * top1 / counted,
        "top5": 100 * top5 / counted,
        "mAP": 100 * ap_sum / counted,
    }


def _random_case(
    seed: int, n_query: int, n_gallery: int, dim: int, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_query, dim, generator=gen),
        torch.randn(n_gallery, dim, generator=gen),
        torch.randint(n_classes, (n_query,), generator=gen),
        torch.randint(n_classes, (n_gallery,), generator=gen),
    )


# (seed, n_query, n_gallery, dim, n_classes, chunk_size); chunk sizes below n_query exercise
# chunking, galleries below 5 exercise the capped top-5, and few classes vs many exercise
# queries with no relevant item (skipped).
CASES = [
    (0, 7, 12, 5, 3, 3),
    (1, 10, 4, 3, 2, 4),
    (2, 1, 9, 2, 4, None),
    (3, 23, 40, 8, 5, 6),
    (4, 16, 3, 4, 3, 1),
    (5, 30, 30, 6, 12, 7),
]


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize(("seed", "n_query", "n_gallery", "dim", "n_classes", "chunk"), CASES)
def test_matches_naive_loop(
    distance: str, seed: int, n_query: int, n_gallery: int, dim: int, n_classes: int, chunk: int
) -> None:
    query, gallery, q_labels, g_labels = _random_case(seed, n_query, n_gallery, dim, n_classes)
    expected = naive_retrieval_scores(
        query.numpy(), gallery.numpy(), q_labels.numpy(), g_labels.numpy(), distance=distance
    )
    got = retrieval_scores(
        query, gallery, q_labels, g_labels, distance=distance, chunk_size=chunk
    ).as_dict()
    assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize(
    ("seed", "n", "dim", "n_classes", "chunk"),
    [
        (10, 4, 3, 2, 3),
        (11, 9, 4, 3, 2),
        (12, 25, 6, 4, 7),
        (13, 40, 5, 9, None),
    ],
)
def test_leave_one_out_matches_naive_loop(
    distance: str, seed: int, n: int, dim: int, n_classes: int, chunk: int
) -> None:
    emb, _, labels, _ = _random_case(seed, n, 1, dim, n_classes)
    expected = naive_retrieval_scores(
        emb.numpy(),
        emb.numpy(),
        labels.numpy(),
        labels.numpy(),
        distance=distance,
        leave_one_out=True,
    )
    got = retrieval_scores(
        emb, emb, labels, labels, distance=distance, leave_one_out=True, chunk_size=chunk
    ).as_dict()
    assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_cross_model_leave_one_out_matches_naive_loop(distance: str) -> None:
    """The paper's cross-version case: query i (new model) and gallery i (upgraded old model)
    embed the same image, so i is excluded although the two embeddings differ."""
    query, _, labels, _ = _random_case(7, 40, 40, 6, 4)
    gallery = query + 0.5 * torch.randn(40, 6, generator=torch.Generator().manual_seed(8))
    got = retrieval_scores(
        query, gallery, labels, labels, distance=distance, leave_one_out=True, chunk_size=7
    ).as_dict()
    want = naive_retrieval_scores(
        query, gallery, labels, labels, distance=distance, leave_one_out=True
    )
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-4)


@pytest.mark.parametrize("chunk", [1, 2, 3, None])
def test_hand_computed_example(chunk: int | None) -> None:
    # Queries sit at the origin and gallery item j at distance j+1 along x, so the ranking is the
    # gallery order. Gallery labels by rank: 0 1 0 1 1 1 2.
    gallery = torch.tensor([[float(p), 0.0] for p in range(1, 8)])
    gallery_labels = torch.tensor([0, 1, 0, 1, 1, 1, 2])
    query = torch.zeros(4, 2)
    query_labels = torch.tensor([0, 1, 2, 3])
    # label 0: relevant at ranks 1, 3    -> AP = (1/1 + 2/3) / 2 = 5/6,  top1 hit, top5 hit
    # label 1: relevant at ranks 2,4,5,6 -> AP = (1/2 + 2/4 + 3/5 + 4/6) / 4 = 17/30, top5 hit
    # label 2: relevant at rank 7        -> AP = 1/7, no hit
    # label 3: nothing relevant          -> skipped
    scores = retrieval_scores(query, gallery, query_labels, gallery_labels, chunk_size=chunk)
    assert scores.top1 == pytest.approx(100 / 3)
    assert scores.top5 == pytest.approx(200 / 3)
    assert scores.mAP == pytest.approx(100 * (5 / 6 + 17 / 30 + 1 / 7) / 3)


def test_hand_computed_leave_one_out() -> None:
    # Points on a line at 0, 1, 3, 7 with labels 0, 0, 1, 1.
    emb = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # 0 -> 1(rel) 3 7: AP 1;   1 -> 0(rel) 3 7: AP 1;
    # 3 -> 1 0 7(rel): AP 1/3; 7 -> 3(rel) 1 0: AP 1.
    loo = retrieval_scores(emb, emb, labels, labels, leave_one_out=True)
    assert loo == RetrievalScores(top1=75.0, top5=100.0, mAP=pytest.approx(100 * 10 / 12))
    # Without leave-one-out every item finds itself first.
    assert retrieval_scores(emb, emb, labels, labels).top1 == 100.0


def test_independent_of_chunk_size_and_input_precision() -> None:
    query, gallery, q_labels, g_labels = _random_case(7, 50, 60, 8, 4)
    reference = retrieval_scores(query, gallery, q_labels, g_labels)
    for chunk in (1, 7, 50, 1000):
        got = retrieval_scores(query, gallery, q_labels, g_labels, chunk_size=chunk)
        assert got.as_dict() == pytest.approx(reference.as_dict(), abs=1e-5)  # BLAS blocking
    got64 = retrieval_scores(query.double(), gallery.double(), q_labels, g_labels)
    assert got64.as_dict() == pytest.approx(reference.as_dict(), abs=1e-4)


def test_exact_ties_rank_irrelevant_items_first() -> None:
    # Both gallery items are at distance 1; the relevant one is ranked second (pessimistic).
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores = retrieval_scores(torch.zeros(1, 2), gallery, torch.tensor([0]), torch.tensor([0, 1]))
    assert scores == RetrievalScores(top1=0.0, top5=100.0, mAP=50.0)


def test_inputs_requiring_grad_are_accepted() -> None:
    query, gallery, q_labels, g_labels = _random_case(9, 6, 8, 4, 2)
    expected = retrieval_scores(query, gallery, q_labels, g_labels)
    got = retrieval_scores(query.requires_grad_(), gallery, q_labels, g_labels)
    assert got == expected


def test_distances_rounded_below_zero_tie_at_zero() -> None:
    # Cosine distances of near-parallel vectors can round to -1e-7. Clamped, they tie at 0 (and
    # the tie ranks the irrelevant item first) instead of ordering by rounding noise.
    dist = torch.tensor([[-2e-7, -1e-7, 0.5]])
    relevant = torch.tensor([[False, True, False]])
    ranked = _sort_rows(_ranking_keys(dist, relevant, self_offset=None))
    assert ranked.bitwise_and(1).tolist() == [[0, 1, 0]]


def test_cpu_sort_matches_torch_sort() -> None:
    keys = torch.randint(-(2**62), 2**62, (5, 300), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(_sort_rows(keys), keys.sort(dim=1).values)


def test_scores_are_frozen_and_serialise_in_order() -> None:
    scores = RetrievalScores(top1=1.0, top5=2.0, mAP=3.0)
    assert list(scores.as_dict().items()) == [("top1", 1.0), ("top5", 2.0), ("mAP", 3.0)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        scores.top1 = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("device", "per_pair"), [("cpu", BYTES_PER_PAIR), ("cuda", BYTES_PER_PAIR_ACCELERATOR)]
)
def test_auto_chunk_size_bounds_memory_for_a_large_gallery(device: str, per_pair: int) -> None:
    for n_gallery in (1, 1000, 100_000, 10**9):
        chunk = auto_chunk_size(n_gallery, device=device)
        assert chunk >= 1
        if n_gallery <= CHUNK_BUDGET_BYTES // per_pair:
            assert chunk * n_gallery * per_pair <= CHUNK_BUDGET_BYTES


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    query, gallery, q_labels, g_labels = _random_case(8, 64, 300, 16, 5)
    cpu = retrieval_scores(query, gallery, q_labels, g_labels, chunk_size=10)
    gpu = retrieval_scores(query, gallery, q_labels, g_labels, chunk_size=10, device="cuda")
    assert gpu.as_dict() == pytest.approx(cpu.as_dict(), abs=1e-4)


def _inputs(**overrides: object) -> dict[str, object]:
    gen = torch.Generator().manual_seed(0)
    kwargs: dict[str, object] = {
        "query": torch.randn(4, 3, generator=gen),
        "gallery": torch.randn(6, 3, generator=gen),
        "query_labels": torch.tensor([0, 1, 0, 1]),
        "gallery_labels": torch.tensor([0, 1, 0, 1, 0, 1]),
    }
    kwargs.update(overrides)
    return kwargs


NAN_QUERY = torch.ones(4, 3).index_put_(
    (torch.tensor([2]), torch.tensor([1])), torch.tensor(torch.nan)
)
SAME = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            {"gallery": torch.zeros(6, 64), "query": torch.zeros(4, 128)},
            r"query embeddings are 128-d but gallery embeddings are 64-d; embed both .* transform",
        ),
        (
            {"query": torch.zeros(3)},
            r"query embeddings must be a 2-D \(n, dim\) tensor, got shape \(3,\)",
        ),
        (
            {"gallery": torch.zeros(6, 3, dtype=torch.int64)},
            r"gallery embeddings must be floating point",
        ),
        (
            {"query": np.zeros((4, 3), dtype=np.float32)},
            r"must be a torch.Tensor, got ndarray; .*from_numpy",
        ),
        (
            {"query": torch.zeros(0, 3), "query_labels": torch.zeros(0, dtype=torch.int64)},
            r"query embeddings are empty",
        ),
        (
            {"query": NAN_QUERY},
            r"query embeddings contain NaN or inf in 1 row\(s\) \(first: row 2\)",
        ),
        (
            {"gallery": torch.full((6, 3), torch.inf)},
            r"gallery embeddings contain NaN or inf in 6 row",
        ),
        (
            {"query_labels": torch.tensor([0, 1, 0])},
            r"query labels have 3 entries but there are 4 query embeddings",
        ),
        ({"gallery_labels": torch.zeros(6, 1, dtype=torch.int64)}, r"gallery labels must be 1-D"),
        (
            {"gallery_labels": torch.zeros(6)},
            r"gallery labels must be integer class ids, got torch.float32",
        ),
        (
            {"gallery_labels": torch.full((6,), 9)},
            r"no query has a relevant gallery item.* same class ids",
        ),
    ],
)
def test_bad_inputs_raise_helpful_data_errors(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(DataError, match=match):
        retrieval_scores(**_inputs(**overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "gallery", "q_labels", "g_labels", "match"),
    [
        (SAME, SAME[:4], torch.arange(5), torch.arange(4), r"5 query and 4 gallery embeddings"),
        (SAME, SAME, torch.arange(5), torch.arange(5).flip(0), r"their labels differ"),
        (
            SAME,
            SAME.clone(),
            torch.arange(5),
            torch.arange(5),
            r"every class needs at least 2 items",
        ),
    ],
)
def test_leave_one_out_inconsistencies(
    query: torch.Tensor,
    gallery: torch.Tensor,
    q_labels: torch.Tensor,
    g_labels: torch.Tensor,
    match: str,
) -> None:
    with pytest.raises(DataError, match=match):
        retrieval_scores(query, gallery, q_labels, g_labels, leave_one_out=True)


def test_unknown_distance_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown distance 'euclidean'; known: cosine, l2"):
        retrieval_scores(**_inputs(), distance="euclidean")  # type: ignore[arg-type]


def test_non_positive_chunk_size_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"chunk_size must be a positive number"):
        retrieval_scores(**_inputs(), chunk_size=0)  # type: ignore[arg-type]
