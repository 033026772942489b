"""Backfilling curves (FastFill, Jaeckle et al., ICLR 2023): retrieval quality of a gallery that
is partly re-embedded with the new model, as a function of the fraction re-embedded.

A transformed gallery holds ``h(old)`` for every item; backfilling item ``i`` replaces its row by
the new model's embedding ``new[i]``. Given an order of the items, the curve scores the mixed
gallery at fractions ``0, 1/steps, ..., 1`` of the items backfilled in that order (queries always
come from the new model), and its area under the curve (trapezoid over the fraction in [0, 1],
so in the metric's unit, percent) summarises how fast an order closes the gap.

Order policies: ``random``; ``uncertainty`` (highest predicted log-variance first, FastFill);
``oracle`` (largest true error ``||h(old) - new||`` first: it reads the new embeddings, so it is
an evaluation bound only, never a plan for a real gallery). Scores reuse
:func:`~fct_registry.evaluation.retrieval.retrieval_scores`, so a curve point is exactly what the
compatibility evaluation reports for that gallery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fct_registry._registry import Registry
from fct_registry.errors import DataError
from fct_registry.evaluation.retrieval import retrieval_scores

OrderFn = Callable[..., Tensor]
ORDERS: Registry[OrderFn] = Registry("backfill policy")
"""``ORDERS.build(name)`` is ``order(n, *, uncertainty, transformed, new, seed)``, returning a
LongTensor ``[n]``."""


def descending(scores: Tensor) -> Tensor:
    """Indices by decreasing score; ties keep index order (deterministic on every platform)."""
    scores = torch.as_tensor(scores).double().reshape(-1)
    if not torch.isfinite(scores).all():
        raise DataError("backfill scores contain NaN or inf; fix the model that produced them")
    return torch.sort(-scores, stable=True).indices


@ORDERS.member("random")
def _random(n: int, *, seed: int = 0, **_: object) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


@ORDERS.member("uncertainty")
def _uncertainty(n: int, *, uncertainty: Tensor | None = None, **_: object) -> Tensor:
    if uncertainty is None or len(uncertainty) != n:
        raise DataError(
            "the uncertainty policy needs one predicted uncertainty per gallery item; "
            "transform the gallery with an uncertainty-aware transformation (fct-uncertainty)"
        )
    return descending(uncertainty)


@ORDERS.member("oracle")
def _oracle(
    n: int, *, transformed: Tensor | None = None, new: Tensor | None = None, **_: object
) -> Tensor:
    if transformed is None or new is None or len(transformed) != n or len(new) != n:
        raise DataError(
            "the oracle policy needs the transformed and the true new embeddings of every item "
            "(evaluation only)"
        )
    return descending(true_error(transformed, new))


def true_error(transformed: Tensor, new: Tensor) -> Tensor:
    """Per-item squared error per dimension of the transformation: the oracle's score."""
    return (transformed.float() - new.float()).square().mean(dim=1)


def backfill_order(
    policy: str,
    n: int,
    *,
    uncertainty: Tensor | None = None,
    transformed: Tensor | None = None,
    new: Tensor | None = None,
    seed: int = 0,
) -> Tensor:
    """The order in which ``policy`` backfills ``n`` items: a permutation of ``0..n-1``."""
    return ORDERS.build(policy)(
        n, uncertainty=uncertainty, transformed=transformed, new=new, seed=seed
    )


def fractions(steps: int) -> list[float]:
    """``0, 1/steps, ..., 1``."""
    if steps < 1:
        raise DataError(f"steps must be >= 1, got {steps}")
    return [i / steps for i in range(steps + 1)]


def backfill_count(n: int, fraction: float) -> int:
    """Items backfilled at ``fraction`` of ``n`` (rounded half up, so 10% of 15 is 2)."""
    return int(np.floor(fraction * n + 0.5))


def area_under_curve(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Trapezoid area of ``ys`` over ``xs`` (increasing)."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


@dataclass(frozen=True)
class BackfillCurve:
    fractions: tuple[float, ...]
    top1: tuple[float, ...]
    mAP: tuple[float, ...]

    @property
    def auc_top1(self) -> float:
        return area_under_curve(self.fractions, self.top1)

    @property
    def auc_mAP(self) -> float:
        return area_under_curve(self.fractions, self.mAP)

    def as_dict(self) -> dict:
        return {
            "fractions": list(self.fractions),
            "top1": list(self.top1),
            "mAP": list(self.mAP),
            "auc_top1": self.auc_top1,
            "auc_mAP": self.auc_mAP,
        }


def mean_curve(curves: Sequence[BackfillCurve]) -> BackfillCurve:
    """The pointwise mean of curves measured at the same fractions (e.g. of several random
    orders: an estimate of the random policy's expected curve). Its area is the mean area."""
    if not curves or any(c.fractions != curves[0].fractions for c in curves):
        raise DataError("mean_curve needs one or more curves measured at the same fractions")

    def mean(values: Sequence[tuple[float, ...]]) -> tuple[float, ...]:
        return tuple(float(v) for v in np.mean(np.asarray(values, dtype=np.float64), axis=0))

    return BackfillCurve(
        curves[0].fractions, mean([c.top1 for c in curves]), mean([c.mAP for c in curves])
    )


def _check_order(order: Tensor, n: int) -> Tensor:
    order = torch.as_tensor(order).long().reshape(-1)
    if len(order) != n or not torch.equal(torch.sort(order).values, torch.arange(n)):
        raise DataError(
            f"a backfill order must be a permutation of the {n} gallery items (each index once); "
            "build it with backfill_order"
        )
    return order


@torch.no_grad()
def backfill_curve(
    transformed: Tensor,
    new: Tensor,
    query: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    order: Tensor,
    *,
    steps: int = 20,
    distance: str = "l2",
    leave_one_out: bool = False,
) -> BackfillCurve:
    """Score the gallery with the first ``backfill_count(n, f)`` items of ``order`` replaced by
    their ``new`` embeddings, for every fraction ``f`` of :func:`fractions`.

    ``transformed`` and ``new``: ``[n, d]`` the same gallery items, transformed and re-embedded.
    ``leave_one_out``: queries are the gallery items themselves (row i of ``query`` is item i),
    as in the pipeline's compatibility evaluation. Each point is one vectorised, chunked
    :func:`retrieval_scores` call; the gallery is updated in place between points.
    """
    if transformed.shape != new.shape:
        raise DataError(
            f"transformed gallery {tuple(transformed.shape)} and new embeddings "
            f"{tuple(new.shape)} differ in shape; pass the same items, embedded in the new space"
        )
    n = len(transformed)
    order = _check_order(order, n)
    gallery = transformed.detach().to(torch.float32, copy=True)
    new = new.detach().to(torch.float32)
    xs = fractions(steps)
    top1: list[float] = []
    mAP: list[float] = []
    done = 0
    for f in xs:
        k = backfill_count(n, f)
        take = order[done:k]
        gallery[take] = new[take]
        done = k
        s = retrieval_scores(
            query,
            gallery,
            query_labels,
            gallery_labels,
            distance=distance,
            leave_one_out=leave_one_out,
        )
        top1.append(s.top1)
        mAP.append(s.mAP)
    return BackfillCurve(tuple(xs), tuple(top1), tuple(mAP))


def backfill_curves(
    transformed: Tensor,
    new: Tensor,
    query: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    orders: Mapping[str, Tensor],
    **kwargs: object,
) -> dict[str, BackfillCurve]:
    """:func:`backfill_curve` for each named order."""
    return {
        name: backfill_curve(transformed, new, query, query_labels, gallery_labels, order, **kwargs)
        for name, order in orders.items()
    }
