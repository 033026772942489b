"""Small random models with their specs, built the way the pipeline builds them."""

from __future__ import annotations

import torch
from torch import nn

from fct_registry.models.io import build_from_spec


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Random weights *and* batch-norm statistics, so eval mode is not an identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                values = (
                    torch.rand(tensor.shape, generator=gen) + 0.5
                    if "running_var" in name
                    else torch.randn(tensor.shape, generator=gen) * 0.3
                )
                tensor.copy_(values)
    return module.eval()


def transformation(
    seed: int = 0,
    *,
    kind: str = "fct",
    old_dim: int = 6,
    new_dim: int = 5,
    side_info_dim: int = 4,
    hidden_dim: int = 8,
) -> tuple[nn.Module, dict]:
    spec = {
        "kind": "transformation",
        "type": kind,
        "old_dim": old_dim,
        "new_dim": new_dim,
        "side_info_dim": side_info_dim if kind == "fct" else 0,
        "hidden_dim": hidden_dim,
    }
    return _randomise(build_from_spec(spec), seed), spec


def embedding(seed: int = 0, *, dim: int = 6) -> tuple[nn.Module, dict]:
    spec = {
        "kind": "embedding",
        "backbone": "smallcnn",
        "backbone_kwargs": {"width": 2},
        "in_channels": 1,
        "input_shape": [1, 12, 12],
        "embedding_dim": dim,
        "num_classes": 3,
        "mean": [0.3],
        "std": [0.25],
    }
    return _randomise(build_from_spec(spec), seed), spec


def side_info(seed: int = 0, *, dim: int = 4) -> tuple[nn.Module, dict]:
    spec = {
        "kind": "side_info",
        "name": "simclr",
        "backbone": "smallcnn",
        "backbone_kwargs": {"width": 2},
        "in_channels": 1,
        "input_shape": [1, 12, 12],
        "dim": dim,
        "projection_dim": 3,
        "mean": [0.3],
        "std": [0.25],
    }
    return _randomise(build_from_spec(spec), seed), spec
