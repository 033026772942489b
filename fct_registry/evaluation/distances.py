"""Pairwise distances between query and gallery embeddings, as pure vectorised torch functions.

Each metric is registered by name in ``DISTANCES``; ``pairwise_distance`` is the one entry point.
Every metric is tested against its mathematical definition (a plain loop) because the reference
code shipped a "cosine" distance normalised with the L1 norm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional

from fct_registry._registry import Registry
from fct_registry.evaluation.distances_np import check_query_gallery
from fct_registry.numerics import sqrt_

DistanceFn = Callable[[Tensor, Tensor], Tensor]
"""``(query (q, d), gallery (g, d)) -> distances (q, g)``; smaller means more similar. Returns a
new tensor (callers may overwrite it in place)."""

# Each function is registered as itself (``member``), so ``DISTANCES.build(name)`` gives the
# function and an unknown name fails with the list of known ones.
DISTANCES: Registry[DistanceFn] = Registry("distance")


@DISTANCES.member("l2")
def l2_distance(query: Tensor, gallery: Tensor) -> Tensor:
    """Euclidean distance ``||q - g||_2`` for every (query, gallery) pair.

    Uses ``||q||^2 + ||g||^2 - 2 q.g`` (one matmul instead of a (q, g, d) difference tensor),
    clamped at 0 before the square root: rounding can make the expansion slightly negative for
    near-identical vectors, which would otherwise give NaN.
    """
    # Squared norms by a reduction kernel: no (g, d) temporary per call, which matters when
    # the caller scores a large gallery chunk by chunk.
    q_sq = torch.linalg.vector_norm(query, dim=1, keepdim=True).square_()  # (q, 1)
    g_sq = torch.linalg.vector_norm(gallery, dim=1).square_()  # (g,), broadcast by addmm
    sq = torch.addmm(g_sq, query, gallery.T, alpha=-2.0).add_(q_sq)
    return sqrt_(sq.clamp_(min=0.0))  # IEEE: the same ranking on every CPU


@DISTANCES.member("cosine")
def cosine_distance(query: Tensor, gallery: Tensor) -> Tensor:
    """``1 - cos(q, g)`` with both sides normalised by their L2 norm (not L1, the reference fault).

    A zero vector has no direction; ``F.normalize`` maps it to zero, so its distance to
    everything is 1 rather than NaN.
    """
    q = functional.normalize(query, p=2.0, dim=1)
    g = functional.normalize(gallery, p=2.0, dim=1)
    return (q @ g.T).neg_().add_(1.0)  # in place: one (q, g) tensor, not two


def pairwise_distance(query: Tensor, gallery: Tensor, metric: str = "l2") -> Tensor:
    """Distances between every query row and every gallery row: a ``(q, g)`` tensor.

    ``metric`` is a name in ``DISTANCES`` (``"l2"`` or ``"cosine"``); an unknown name raises
    ``ConfigError`` listing the known ones.
    """
    fn = DISTANCES.build(metric)
    check_query_gallery(query, gallery)
    return fn(query, gallery)
