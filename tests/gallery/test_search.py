"""Top-k search against a gallery: the naive loop as oracle, and agreement with the evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fct_registry.evaluation.retrieval import retrieval_scores
from fct_registry.gallery import Gallery, GalleryWriter, make_batch, open_storage
from fct_registry.gallery.errors import GalleryError, SchemaError
from fct_registry.gallery.search import search, topk_accuracy


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Gallery, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n, dim = 300, 12
    labels = rng.integers(0, 6, n)
    emb = (rng.normal(size=(6, dim))[labels] * 0.4 + rng.normal(size=(n, dim))).astype(np.float32)
    root = tmp_path_factory.mktemp("search") / "g"
    writer = GalleryWriter(open_storage(root), "tiny", shard_rows=70, row_group_rows=32)
    writer.write(make_batch([f"x{i}" for i in range(n)], emb, model_version=3, labels=labels))
    writer.close()
    return Gallery.open(root), emb, labels


def _naive(
    queries: np.ndarray, gallery: np.ndarray, k: int, skip: list[int | None], metric: str
) -> list[list[int]]:
    out = []
    for i, q in enumerate(queries):
        scored = []
        for j, g in enumerate(gallery):
            if skip[i] == j:
                continue
            if metric == "l2":
                d = float(np.sqrt(((q.astype(np.float64) - g) ** 2).sum()))
            else:
                d = 1 - float(q @ g) / (np.linalg.norm(q) * np.linalg.norm(g))
            scored.append((d, j))
        out.append([j for _, j in sorted(scored)[:k]])
    return out


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_matches_a_naive_loop(data: tuple, metric: str) -> None:
    gallery, emb, _ = data
    queries = emb[:25] + 0.01
    got = search(gallery, queries, k=7, distance=metric)
    assert got.positions.tolist() == _naive(queries, emb, 7, [None] * 25, metric)
    assert got.ids[0, 0] == f"x{got.positions[0, 0]}"


def test_chunk_size_does_not_change_the_answer(data: tuple) -> None:
    gallery, emb, _ = data
    small = search(gallery, emb[:10], k=5, budget_bytes=24 * 10 * 17)  # 17-row chunks
    large = search(gallery, emb[:10], k=5)
    assert np.array_equal(small.positions, large.positions)
    # BLAS may block a (10 x 17) product differently from a (10 x 300) one: last-bit changes
    np.testing.assert_allclose(small.distances, large.distances, rtol=1e-5, atol=1e-6)


def test_exclude_self_and_accuracy_agree_with_the_evaluation(data: tuple) -> None:
    gallery, emb, labels = data
    ids = [f"x{i}" for i in range(len(emb))]
    result = search(gallery, emb, k=5, exclude_ids=ids)
    assert all(result.positions[i, 0] != i for i in range(len(emb)))
    want = retrieval_scores(
        torch.from_numpy(emb),
        torch.from_numpy(emb),
        torch.from_numpy(labels),
        torch.from_numpy(labels),
        leave_one_out=True,
    )
    got = topk_accuracy(result, labels)
    assert got["top1"] == pytest.approx(want.top1, abs=1e-9)
    assert got["top5"] == pytest.approx(want.top5, abs=1e-9)


def test_k_larger_than_the_gallery(data: tuple) -> None:
    gallery, emb, _ = data
    assert search(gallery, emb[:2], k=10_000).k == len(emb)


def test_incompatible_queries_are_refused(data: tuple, tmp_path: Path) -> None:
    gallery, emb, _ = data
    with pytest.raises(GalleryError, match=r"tiny@1 embeddings but .* holds tiny@3.*fct upgrade"):
        search(gallery, emb[:2], query_version=1)
    with pytest.raises(SchemaError, match=r"12-d"):
        search(gallery, emb[:2, :5])
    writer = GalleryWriter(open_storage(tmp_path / "mixed"), "tiny")
    writer.write(make_batch(["a"], emb[:1], model_version=1))
    writer.write(make_batch(["b"], emb[:1], model_version=2))
    writer.close()
    with pytest.raises(GalleryError, match=r"mixes versions"):
        search(Gallery.open(tmp_path / "mixed"), emb[:1])
