"""The NumPy distances (core install) against their definition (a plain loop) and the torch ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation.distances import DISTANCES
from fct_registry.evaluation.distances import pairwise_distance as torch_distance
from fct_registry.evaluation.distances_np import NP_DISTANCES, pairwise_distance
from tests.evaluation.test_distances import DEFINITIONS


def test_same_names_as_the_torch_registry() -> None:
    assert NP_DISTANCES.names() == DISTANCES.names() == sorted(DEFINITIONS)


@pytest.mark.parametrize("metric", sorted(DEFINITIONS))
def test_matches_the_definition_and_torch(metric: str) -> None:
    rng = np.random.default_rng(3)
    query = rng.normal(size=(6, 5)).astype(np.float32) * 3
    gallery = rng.normal(size=(9, 5)).astype(np.float32)
    gallery[4] = query[2]  # an identical pair: distance 0, not NaN
    got = pairwise_distance(query, gallery, metric)
    assert got.dtype == np.float32 and got.shape == (6, 9)
    loop = [[DEFINITIONS[metric](q.tolist(), g.tolist()) for g in gallery] for q in query]
    np.testing.assert_allclose(got, loop, atol=2e-6, rtol=1e-5)
    want = torch_distance(torch.from_numpy(query), torch.from_numpy(gallery), metric).numpy()
    np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)
    assert np.isfinite(got).all()


def test_cosine_of_a_zero_vector_is_one_like_torch() -> None:
    query = np.zeros((1, 3), dtype=np.float32)
    gallery = np.eye(3, dtype=np.float32)
    assert pairwise_distance(query, gallery, "cosine").tolist() == [[1.0, 1.0, 1.0]]
    want = torch_distance(torch.from_numpy(query), torch.from_numpy(gallery), "cosine")
    assert want.tolist() == [[1.0, 1.0, 1.0]]


def test_unknown_metric_and_dimension_mismatch() -> None:
    a = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ConfigError, match="unknown distance 'manhattan'; known: cosine, l2"):
        pairwise_distance(a, a, "manhattan")
    with pytest.raises(DataError, match="query embeddings are 3-d but gallery embeddings are 4-d"):
        pairwise_distance(a, np.zeros((2, 4), dtype=np.float32))
