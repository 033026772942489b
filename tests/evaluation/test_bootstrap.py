"""Paired bootstrap over queries: vectorised resampling against a plain loop, and its intervals."""

from __future__ import annotations

import numpy as np
import torch

from fct_registry.evaluation.bootstrap import (
    bootstrap_indices,
    bootstrap_means,
    difference_interval,
    gap_closed_interval,
    percentile_interval,
)


def test_bootstrap_means_match_a_loop():
    torch.manual_seed(0)
    series = torch.rand(37, 3)
    idx = bootstrap_indices(37, 50, seed=1)
    fast = bootstrap_means(series, idx)
    for b in range(50):  # the oracle: resample rows one resample at a time
        rows = [series[int(i)] for i in idx[b]]
        naive = torch.stack(rows).double().mean(0)
        assert torch.allclose(fast[b], naive, atol=1e-12)


def test_indices_are_seeded_and_in_range():
    a, b = bootstrap_indices(10, 20, 3), bootstrap_indices(10, 20, 3)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 9
    assert not torch.equal(a, bootstrap_indices(10, 20, 4))


def test_difference_interval_matches_a_loop_and_covers_the_estimate():
    gen = torch.Generator().manual_seed(0)
    a = (torch.rand(400, generator=gen) < 0.8).double()
    b = (torch.rand(400, generator=gen) < 0.7).double()
    got = difference_interval(a, b, resamples=300, seed=5)
    idx = bootstrap_indices(400, 300, 5).numpy()
    an, bn = a.numpy(), b.numpy()
    diffs = np.array([an[r].mean() - bn[r].mean() for r in idx])
    low, high = np.quantile(diffs, [0.025, 0.975])
    assert abs(got.low - low) < 1e-9 and abs(got.high - high) < 1e-9
    assert abs(got.estimate - (an.mean() - bn.mean())) < 1e-12
    assert got.low <= got.estimate <= got.high


def test_pairing_shrinks_the_interval_of_correlated_systems():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(2000, generator=gen)
    a = (base < 0.75).double()
    b = (base < 0.72).double()  # b's hits are a subset of a's: a paired difference is sharp
    paired = difference_interval(a, b, resamples=500)
    assert paired.excludes_zero and paired.low > 0
    assert paired.high - paired.low < 0.02


def test_gap_closed_interval_matches_a_loop():
    gen = torch.Generator().manual_seed(2)
    old = torch.rand(300, generator=gen)
    new = old + 0.3 * torch.rand(300, generator=gen)
    cross = old + 0.2 * torch.rand(300, generator=gen)
    got = gap_closed_interval(cross, old, new, resamples=200, seed=9)
    idx = bootstrap_indices(300, 200, 9).numpy()
    c, o, n = cross.double().numpy(), old.double().numpy(), new.double().numpy()
    ratios = [100 * (c[r].mean() - o[r].mean()) / (n[r].mean() - o[r].mean()) for r in idx]
    assert np.allclose([got.low, got.high], np.quantile(ratios, [0.025, 0.975]))
    assert abs(got.estimate - 100 * (c.mean() - o.mean()) / (n.mean() - o.mean())) < 1e-9


def test_percentile_interval_ignores_non_finite_resamples():
    samples = torch.tensor([1.0, 2.0, 3.0, float("nan"), float("inf")] * 10)
    ci = percentile_interval(2.0, samples)
    assert 1.0 <= ci.low <= ci.high <= 3.0
