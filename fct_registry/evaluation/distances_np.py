"""The distances of :mod:`~fct_registry.evaluation.distances` in NumPy, for the core install.

``fct search`` and ``fct evaluate`` run on a gallery machine without torch (``pip install
fct-registry``, no ``train`` extra), so they rank with these. The names and definitions are the
torch registry's (tests check both against each other and against a plain loop); training and
the DVC evaluation stages keep the torch versions, so tracked outputs do not move.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fct_registry._registry import Registry
from fct_registry.errors import DataError

NpDistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(query (q, d), gallery (g, d)) -> distances (q, g)``, float32; smaller is more similar.
Returns a new array (callers may overwrite it in place)."""

NP_DISTANCES: Registry[NpDistanceFn] = Registry("distance")


def _float32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


@NP_DISTANCES.member("l2")
def l2_distance(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Euclidean distance ``||q - g||_2`` for every pair, by ``||q||^2 + ||g||^2 - 2 q.g`` (one
    matmul), clamped at 0 before the square root as in the torch version."""
    query, gallery = _float32(query), _float32(gallery)
    q_sq = np.einsum("ij,ij->i", query, query)[:, None]
    g_sq = np.einsum("ij,ij->i", gallery, gallery)[None, :]
    sq = query @ gallery.T
    sq *= -2.0
    sq += q_sq
    sq += g_sq
    np.maximum(sq, 0.0, out=sq)
    return np.sqrt(sq, out=sq)


def _normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; a zero row stays zero (``F.normalize``'s eps behaviour)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


@NP_DISTANCES.member("cosine")
def cosine_distance(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``1 - cos(q, g)`` with L2-normalised rows; a zero vector is at distance 1 from all."""
    out = _normalize(_float32(query)) @ _normalize(_float32(gallery)).T
    np.negative(out, out=out)
    out += 1.0
    return out


def pairwise_distance(query: np.ndarray, gallery: np.ndarray, metric: str = "l2") -> np.ndarray:
    """``(q, g)`` distances; ``metric`` is a name in ``NP_DISTANCES`` (unknown: ``ConfigError``)."""
    fn = NP_DISTANCES.build(metric)
    check_query_gallery(query, gallery)
    return fn(query, gallery)


def check_query_gallery(query: Any, gallery: Any) -> None:
    """Raise ``DataError`` unless both are 2-D with the same embedding dimension. Shared by the
    torch metrics (:mod:`.distances`), which pass tensors: only ``ndim`` and ``shape`` are read."""
    if query.ndim != 2 or gallery.ndim != 2:
        what = "arrays" if isinstance(query, np.ndarray) else "tensors"
        raise DataError(
            f"embeddings must be 2-D (n, dim) {what}, got query shape {tuple(query.shape)} "
            f"and gallery shape {tuple(gallery.shape)}; put one embedding per row"
        )
    if query.shape[1] != gallery.shape[1]:
        raise DataError(
            f"query embeddings are {query.shape[1]}-d but gallery embeddings are "
            f"{gallery.shape[1]}-d; embed both with compatible models "
            "or transform the gallery first"
        )
