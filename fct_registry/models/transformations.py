"""FCT transformations ``h(old_embedding, side_info) -> new embedding`` and their chains.

Two architectures, each with a variant without side-info (same call signature, so chains and
exported graphs are uniform; the side-info argument is ignored):

* ``fct`` / ``fct-no-side-info`` (this project's): the old embedding and the side-info are each
  projected (linear + batch-norm + ReLU) to ``hidden_dim``, concatenated, and mixed by one more
  block and a linear layer into the new space.
* ``ml-fct`` / ``ml-fct-no-side-info``: the shape of apple/ml-fct's ``MLP_BN_SIDE_PROJECTION``
  (its 1x1 convolutions on ``[N, C, 1, 1]`` are linear layers): old ``d_o -> 2 d_o -> 2 d_n``,
  side-info ``d_s -> 2 d_s -> 2 d_n``, then a mixer ``4 d_n -> hidden -> hidden -> d_n``
  (128-d: 256 + 256 -> 2048 -> 2048 -> 128 at the paper's width).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from fct_registry._registry import Registry

TRANSFORMATIONS: Registry[nn.Module] = Registry("transformation kind")


def _block(cin: int, cout: int) -> nn.Sequential:
    # No bias before batch-norm: it would be cancelled by the normalisation (and only drift).
    return nn.Sequential(
        nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)
    )


class TwoBranchTransformation(nn.Module, ABC):
    """Both architectures: the old embedding and (optionally) the side-info each go through a
    branch, the branches are concatenated and a mixer maps them into the new space. Subclasses
    build the branches and ``mixer``; their attribute names are the stored weights' keys."""

    def __init__(self, old_dim: int, new_dim: int, side_info_dim: int) -> None:
        super().__init__()
        self.old_dim, self.new_dim, self.side_info_dim = old_dim, new_dim, side_info_dim

    @abstractmethod
    def branches(self) -> tuple[nn.Module, nn.Module | None]:
        """The old-embedding branch and the side-info branch (None: no side-info)."""

    @property
    def uses_side_info(self) -> bool:
        return self.branches()[1] is not None

    def mixer_input(self, old: torch.Tensor, side_info: torch.Tensor) -> torch.Tensor:
        old_branch, side_branch = self.branches()
        h = old_branch(old)
        if side_branch is not None:
            h = torch.cat([h, side_branch(side_info)], dim=1)
        return h

    def forward(self, old: torch.Tensor, side_info: torch.Tensor) -> torch.Tensor:
        return self.mixer(self.mixer_input(old, side_info))


class FCTTransformation(TwoBranchTransformation):
    def __init__(self, old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048):
        super().__init__(old_dim, new_dim, side_info_dim)
        self.old_proj = _block(old_dim, hidden_dim)
        self.side_proj = _block(side_info_dim, hidden_dim) if side_info_dim else None
        mixed = hidden_dim * (2 if side_info_dim else 1)
        self.mixer = nn.Sequential(_block(mixed, hidden_dim), nn.Linear(hidden_dim, new_dim))

    def branches(self) -> tuple[nn.Module, nn.Module | None]:
        return self.old_proj, self.side_proj


class MLFCTTransformation(TwoBranchTransformation):
    """apple/ml-fct's ``MLP_BN_SIDE_PROJECTION`` (``side_info_dim=0``: without side-info)."""

    def __init__(self, old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048):
        super().__init__(old_dim, new_dim, side_info_dim)
        self.p1 = nn.Sequential(_block(old_dim, 2 * old_dim), _block(2 * old_dim, 2 * new_dim))
        self.p2 = (
            nn.Sequential(
                _block(side_info_dim, 2 * side_info_dim), _block(2 * side_info_dim, 2 * new_dim)
            )
            if side_info_dim
            else None
        )
        mixed = 2 * new_dim * (2 if side_info_dim else 1)
        self.mixer = nn.Sequential(
            _block(mixed, hidden_dim),
            _block(hidden_dim, hidden_dim),
            nn.Linear(hidden_dim, new_dim),
        )

    def branches(self) -> tuple[nn.Module, nn.Module | None]:
        return self.p1, self.p2


NO_SIDE_INFO_SUFFIX = "-no-side-info"


def _register(kind: str, cls: type[TwoBranchTransformation]) -> None:
    """``kind`` builds ``cls``, and ``kind-no-side-info`` the same without the side branch."""

    def with_side_info(
        old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048
    ) -> nn.Module:
        return cls(old_dim, new_dim, side_info_dim, hidden_dim)

    def without_side_info(
        old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048
    ) -> nn.Module:
        return cls(old_dim, new_dim, 0, hidden_dim)

    TRANSFORMATIONS.register(kind)(with_side_info)
    TRANSFORMATIONS.register(kind + NO_SIDE_INFO_SUFFIX)(without_side_info)


_register("fct", FCTTransformation)
_register("ml-fct", MLFCTTransformation)


def uses_side_info(kind: str) -> bool:
    return not kind.endswith(NO_SIDE_INFO_SUFFIX)


def architecture(kind: str) -> str:
    """The architecture of a transformation kind (``fct``, ``ml-fct``), side-info or not."""
    return kind.removesuffix(NO_SIDE_INFO_SUFFIX)


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
