"""Paired bootstrap over queries: confidence intervals for differences and ratios of metrics
that were measured on the same queries (Efron & Tibshirani 1993, percentile intervals).

Every series is resampled with the *same* query indices, so a comparison keeps its pairing (a
query that is hard for both systems stays in both). Resampled means are one matrix product: the
bootstrap counts ``[B, n]`` (how often each query was drawn) times the series ``[n, k]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def bootstrap_indices(n: int, resamples: int, seed: int) -> Tensor:
    """``[resamples, n]`` query indices drawn with replacement (seeded, reproducible)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (resamples, n), generator=gen)


def bootstrap_means(series: Tensor, indices: Tensor) -> Tensor:
    """Means of each column of ``series`` ``[n, k]`` over each resample: ``[resamples, k]``.

    Counts of each query per resample, then one ``[B, n] @ [n, k]`` product; equal to
    ``series[indices].mean(1)`` without materialising ``[B, n, k]``.
    """
    resamples, n = indices.shape
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    counts.scatter_add_(1, indices, torch.ones_like(indices, dtype=torch.float64))
    return counts @ series.double() / n


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "ci_low": self.low, "ci_high": self.high}

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def percentile_interval(estimate: float, samples: Tensor, level: float = 0.95) -> Interval:
    """The ``level`` percentile interval of bootstrap ``samples`` around the full-data estimate."""
    finite = samples[torch.isfinite(samples)].double()
    if len(finite) == 0:  # e.g. a gap closed when old/old == new/new: undefined
        return Interval(float(estimate), float("nan"), float("nan"))
    alpha = (1 - level) / 2
    low, high = torch.quantile(finite, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return Interval(float(estimate), float(low), float(high))


def difference_interval(
    a: Tensor, b: Tensor, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Mean of ``a`` minus mean of ``b`` (paired per-query outcomes, same length), with its CI."""
    series = torch.stack([a, b], 1)
    means = bootstrap_means(series, bootstrap_indices(len(a), resamples, seed))
    return percentile_interval(
        float(a.double().mean() - b.double().mean()), means[:, 0] - means[:, 1], level
    )


def gap_closed_interval(
    cross: Tensor,
    old_old: Tensor,
    new_new: Tensor,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Share (percent) of the old/old -> new/new gap that the cross-version case recovers,
    ``(cross - old) / (new - old)``, with its paired-bootstrap CI (same queries in all three)."""
    series = torch.stack([cross, old_old, new_new], 1).double()

    def ratio(m: Tensor) -> Tensor:
        return 100.0 * (m[..., 0] - m[..., 1]) / (m[..., 2] - m[..., 1])

    means = bootstrap_means(series, bootstrap_indices(len(cross), resamples, seed))
    return percentile_interval(float(ratio(series.mean(0))), ratio(means), level)
