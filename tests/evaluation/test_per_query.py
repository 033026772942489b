"""Per-query outcomes: their means are retrieval_scores, each value matches a per-query loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from fct_registry.evaluation.per_query import per_query_scores
from fct_registry.evaluation.retrieval import retrieval_scores


def _data(seed: int = 0, n: int = 60, dim: int = 6, classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    centers = torch.randn(classes, dim, generator=gen)
    emb = centers[labels] + 0.9 * torch.randn(n, dim, generator=gen)
    return emb, labels


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("leave_one_out", [True, False])
def test_means_equal_retrieval_scores(distance, leave_one_out):
    q, ql = _data(0)
    g, gl = (q, ql) if leave_one_out else _data(1, n=45)
    pq = per_query_scores(
        q, g, ql, gl, distance=distance, leave_one_out=leave_one_out, chunk_size=7
    )
    ref = retrieval_scores(q, g, ql, gl, distance=distance, leave_one_out=leave_one_out)
    for k, v in pq.means().items():
        assert abs(v - getattr(ref, k)) < 1e-4  # retrieval_scores counts in float32


def test_each_query_matches_a_loop():
    q, ql = _data(3)
    g = q + 0.1 * torch.randn_like(q)  # another model's embeddings of the same items
    pq = per_query_scores(q, g, ql, ql, leave_one_out=True, chunk_size=11)
    qn, gn, lab = q.double().numpy(), g.double().numpy(), ql.numpy()
    rows = []
    for i in range(len(qn)):
        dist = np.sqrt(((gn - qn[i]) ** 2).sum(1))
        keep = np.arange(len(gn)) != i
        dist, rel = dist[keep], (lab == lab[i])[keep]
        if not rel.any():
            continue
        order = np.argsort(dist, kind="stable")
        rows.append((i, rel[order[0]], rel[order[:5]].any(), average_precision_score(rel, -dist)))
    assert pq.index.tolist() == [r[0] for r in rows]
    assert np.allclose(pq.top1.numpy(), [r[1] for r in rows])
    assert np.allclose(pq.top5.numpy(), [r[2] for r in rows])
    assert np.allclose(pq.ap.numpy(), [r[3] for r in rows], atol=1e-6)


def test_queries_without_a_relevant_item_are_dropped():
    emb = torch.randn(5, 3)
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has one item: undefined in leave-one-out
    pq = per_query_scores(emb, emb, labels, labels, leave_one_out=True)
    assert pq.index.tolist() == [0, 1, 2, 3]
