"""FCT transformations ``h(old_embedding, side_info) -> new embedding`` and their chains.

The MLP follows the paper (arXiv 2112.02805, Sec. 3): the old embedding and the side-info are
projected separately (linear + batch-norm + ReLU) to an inner width, concatenated, and mixed by
a second MLP into the new space. The ``fct-no-side-info`` variant drops the side-info branch; it
keeps the same call signature so chains and exported graphs are uniform.
"""

from __future__ import annotations

import torch
from torch import nn

from fct_registry._registry import Registry

TRANSFORMATIONS: Registry[nn.Module] = Registry("transformation kind")


def _block(cin: int, cout: int) -> nn.Sequential:
    # No bias before batch-norm: it would be cancelled by the normalisation (and only drift).
    return nn.Sequential(
        nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)
    )


class FCTTransformation(nn.Module):
    def __init__(self, old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048):
        super().__init__()
        self.old_dim, self.new_dim, self.side_info_dim = old_dim, new_dim, side_info_dim
        self.old_proj = _block(old_dim, hidden_dim)
        self.side_proj = _block(side_info_dim, hidden_dim) if side_info_dim else None
        mixed = hidden_dim * (2 if side_info_dim else 1)
        self.mixer = nn.Sequential(_block(mixed, hidden_dim), nn.Linear(hidden_dim, new_dim))

    @property
    def uses_side_info(self) -> bool:
        return self.side_proj is not None

    def forward(self, old: torch.Tensor, side_info: torch.Tensor) -> torch.Tensor:
        h = self.old_proj(old)
        if self.side_proj is not None:
            h = torch.cat([h, self.side_proj(side_info)], dim=1)
        return self.mixer(h)


@TRANSFORMATIONS.register("fct")
def fct(old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048) -> nn.Module:
    return FCTTransformation(old_dim, new_dim, side_info_dim, hidden_dim)


@TRANSFORMATIONS.register("fct-no-side-info")
def fct_no_side_info(
    old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048
) -> nn.Module:
    return FCTTransformation(old_dim, new_dim, 0, hidden_dim)


def uses_side_info(kind: str) -> bool:
    return kind != "fct-no-side-info"


class TransformationChain(nn.Module):
    """Hops applied in order; every hop reads the same side-info, which never changes (FCT)."""

    def __init__(self, hops: list[nn.Module]) -> None:
        super().__init__()
        if not hops:
            raise ValueError("a chain needs at least one transformation")
        self.hops = nn.ModuleList(hops)

    def forward(self, old: torch.Tensor, side_info: torch.Tensor) -> torch.Tensor:
        for hop in self.hops:
            old = hop(old, side_info)
        return old
