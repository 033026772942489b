"""Backfilling curves against a plain per-query loop on tiny galleries."""

import numpy as np
import pytest
import torch

from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation.backfill import (
    ORDERS,
    area_under_curve,
    backfill_count,
    backfill_curve,
    backfill_curves,
    backfill_order,
    descending,
    fractions,
    mean_curve,
    true_error,
)
from fct_registry.evaluation.retrieval import retrieval_scores


def naive_scores(query, gallery, q_labels, g_labels, leave_one_out):
    """top-1 and mAP (percent) with explicit loops (ties: irrelevant first, as retrieval.py)."""
    top1, aps = [], []
    for i in range(len(query)):
        items = []
        for j in range(len(gallery)):
            if leave_one_out and i == j:
                continue
            d = float(np.sqrt(((query[i] - gallery[j]) ** 2).sum()))
            rel = int(q_labels[i] == g_labels[j])
            items.append((d, rel))
        items.sort(key=lambda t: (t[0], t[1]))
        if not any(r for _, r in items):
            continue
        top1.append(items[0][1])
        hits, precisions = 0, []
        for rank, (_, rel) in enumerate(items, start=1):
            if rel:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / len(precisions))
    return 100 * float(np.mean(top1)), 100 * float(np.mean(aps))


def naive_curve(transformed, new, query, ql, gl, order, steps, loo):
    n = len(transformed)
    out = []
    for i in range(steps + 1):
        k = int(np.floor(i / steps * n + 0.5))
        gallery = transformed.copy()
        for j in order[:k]:
            gallery[j] = new[j]
        out.append(naive_scores(query, gallery, ql, gl, loo))
    return out


@pytest.fixture
def tiny():
    gen = torch.Generator().manual_seed(3)
    n, d = 23, 5
    labels = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.randn(3, d, generator=gen) * 2
    new = centers[labels] + torch.randn(n, d, generator=gen)
    transformed = new + torch.randn(n, d, generator=gen) * 1.5
    return transformed, new, labels


@pytest.mark.parametrize("loo", [True, False])
@pytest.mark.parametrize("policy", ["random", "oracle", "uncertainty"])
def test_curve_matches_naive_loop(tiny, loo, policy):
    transformed, new, labels = tiny
    unc = torch.rand(len(new), generator=torch.Generator().manual_seed(1))
    order = backfill_order(
        policy, len(new), uncertainty=unc, transformed=transformed, new=new, seed=5
    )
    query = new if loo else new[:9] + 0.1
    ql = labels if loo else labels[:9]
    curve = backfill_curve(transformed, new, query, ql, labels, order, steps=7, leave_one_out=loo)
    want = naive_curve(
        transformed.numpy(),
        new.numpy(),
        query.numpy(),
        ql.numpy(),
        labels.numpy(),
        order.tolist(),
        7,
        loo,
    )
    assert np.allclose(curve.top1, [w[0] for w in want], atol=1e-4)
    assert np.allclose(curve.mAP, [w[1] for w in want], atol=1e-4)
    x = np.array(curve.fractions)
    assert curve.auc_mAP == pytest.approx(np.trapezoid(curve.mAP, x))
    assert curve.auc_top1 == pytest.approx(np.trapezoid(curve.top1, x))


def test_curve_ends_are_transformed_and_new(tiny):
    transformed, new, labels = tiny
    order = backfill_order("random", len(new), seed=0)
    curve = backfill_curve(
        transformed, new, new, labels, labels, order, steps=4, leave_one_out=True
    )
    start = retrieval_scores(new, transformed, labels, labels, leave_one_out=True)
    end = retrieval_scores(new, new, labels, labels, leave_one_out=True)
    assert (curve.top1[0], curve.mAP[0]) == pytest.approx((start.top1, start.mAP))
    assert (curve.top1[-1], curve.mAP[-1]) == pytest.approx((end.top1, end.mAP))
    assert torch.equal(transformed, tiny[0])  # the input gallery is not modified


def test_orders():
    unc = torch.tensor([0.1, 0.9, 0.5, 0.9, -1.0])
    assert descending(unc).tolist() == [1, 3, 2, 0, 4]  # ties keep index order
    t = torch.zeros(3, 2)
    new = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    assert backfill_order("oracle", 3, transformed=t, new=new).tolist() == [1, 2, 0]
    assert true_error(t, new).tolist() == pytest.approx([0.0, 4.5, 1.0])
    r = backfill_order("random", 50, seed=2)
    assert sorted(r.tolist()) == list(range(50))
    assert torch.equal(r, backfill_order("random", 50, seed=2))
    assert not torch.equal(r, backfill_order("random", 50, seed=3))
    assert ORDERS.names() == ["oracle", "random", "uncertainty"]


def test_errors_name_the_fix(tiny):
    transformed, new, labels = tiny
    with pytest.raises(ConfigError, match="known: oracle, random, uncertainty"):
        backfill_order("greedy", 3)
    with pytest.raises(DataError, match="uncertainty-aware"):
        backfill_order("uncertainty", 3)
    with pytest.raises(DataError, match="evaluation only"):
        backfill_order("oracle", 3)
    with pytest.raises(DataError, match="permutation"):
        backfill_curve(transformed, new, new, labels, labels, torch.zeros(len(new)))
    with pytest.raises(DataError, match="NaN"):
        descending(torch.tensor([0.0, float("nan")]))


def test_counts_fractions_auc():
    assert fractions(4) == [0, 0.25, 0.5, 0.75, 1.0]
    assert [backfill_count(15, f) for f in (0, 0.1, 0.5, 1.0)] == [0, 2, 8, 15]
    assert area_under_curve([0, 0.5, 1], [0, 1, 1]) == pytest.approx(0.75)


def test_curves_for_several_orders(tiny):
    transformed, new, labels = tiny
    orders = {
        p: backfill_order(p, len(new), transformed=transformed, new=new)
        for p in ("random", "oracle")
    }
    curves = backfill_curves(
        transformed, new, new, labels, labels, orders, steps=3, leave_one_out=True
    )
    assert set(curves) == {"random", "oracle"}
    assert curves["oracle"].as_dict()["fractions"] == [0, 1 / 3, 2 / 3, 1]


def test_mean_curve_is_pointwise_and_keeps_the_area(tiny):
    transformed, new, labels = tiny
    orders = {k: backfill_order("random", len(new), seed=k) for k in range(3)}
    curves = list(
        backfill_curves(
            transformed, new, new, labels, labels, orders, steps=4, leave_one_out=True
        ).values()
    )
    mean = mean_curve(curves)
    for i in range(5):
        assert mean.top1[i] == pytest.approx(sum(c.top1[i] for c in curves) / 3)
        assert mean.mAP[i] == pytest.approx(sum(c.mAP[i] for c in curves) / 3)
    assert mean.auc_mAP == pytest.approx(sum(c.auc_mAP for c in curves) / 3)
    assert mean_curve(curves[:1]) == curves[0]
    other = backfill_curve(
        transformed, new, new, labels, labels, orders[0], steps=2, leave_one_out=True
    )
    with pytest.raises(DataError, match="same fractions"):
        mean_curve([curves[0], other])
