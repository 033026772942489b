"""Every registered distance against its mathematical definition, computed with a plain loop."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch

from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation import distances, distances_np
from fct_registry.evaluation.distances import DISTANCES, pairwise_distance


def _l2(a: Sequence[float], b: Sequence[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1.0 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


DEFINITIONS: dict[str, Callable[[Sequence[float], Sequence[float]], float]] = {
    "l2": _l2,
    "cosine": _cosine,
}


def test_every_registered_distance_has_a_definition_here() -> None:
    assert set(DISTANCES.names()) == set(DEFINITIONS)


@pytest.mark.parametrize("metric", DISTANCES.names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n_query", "n_gallery", "dim"), [(1, 1, 1), (3, 5, 4), (6, 2, 7)])
def test_matches_definition(
    metric: str, dtype: torch.dtype, n_query: int, n_gallery: int, dim: int
) -> None:
    gen = torch.Generator().manual_seed(n_query * 100 + n_gallery * 10 + dim)
    query = torch.randn(n_query, dim, generator=gen, dtype=torch.float64)
    gallery = torch.randn(n_gallery, dim, generator=gen, dtype=torch.float64)
    expected = torch.tensor(
        [[DEFINITIONS[metric](q.tolist(), g.tolist()) for g in gallery] for q in query],
        dtype=torch.float64,
    )

    got = pairwise_distance(query.to(dtype), gallery.to(dtype), metric)

    assert got.shape == (n_query, n_gallery)
    assert got.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got.double(), expected, atol=tol, rtol=tol)


def test_cosine_uses_the_l2_norm_not_l1() -> None:
    # cos([3, 4], [4, 3]) = 24/25, so the distance is 0.04; L1 normalisation would give 0.51.
    got = pairwise_distance(torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]]), "cosine")
    assert got.item() == pytest.approx(0.04, abs=1e-6)


def test_cosine_is_scale_invariant() -> None:
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(4, 8, generator=gen), torch.randn(5, 8, generator=gen)
    torch.testing.assert_close(
        pairwise_distance(q, g, "cosine"), pairwise_distance(7.5 * q, 0.01 * g, "cosine")
    )


def test_l2_of_identical_rows_is_zero_not_nan() -> None:
    # The expansion ||q||^2 + ||g||^2 - 2 q.g can round below 0; the clamp keeps sqrt finite.
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    diag = pairwise_distance(x, x, "l2").diagonal()
    assert torch.isfinite(diag).all()
    assert diag.abs().max() < 1e-2


def test_unknown_metric_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown distance 'euclid'; known: cosine, l2"):
        pairwise_distance(torch.zeros(1, 2), torch.zeros(1, 2), "euclid")


def test_dimension_mismatch_names_both_dims() -> None:
    with pytest.raises(DataError, match=r"query embeddings are 3-d but gallery .* 2-d"):
        pairwise_distance(torch.zeros(1, 3), torch.zeros(1, 2))


def test_each_distance_is_registered_as_itself_in_both_registries():
    assert DISTANCES.build("l2") is distances.l2_distance
    assert DISTANCES.build("cosine") is distances.cosine_distance
    assert distances_np.NP_DISTANCES.build("l2") is distances_np.l2_distance
    assert distances_np.NP_DISTANCES.build("cosine") is distances_np.cosine_distance
    with pytest.raises(ValueError, match="registered twice"):
        DISTANCES.member("l2")(distances.cosine_distance)
