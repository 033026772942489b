"""Uncertainty-aware FCT transformation (FastFill, Jaeckle et al., ICLR 2023).

Alongside the new-space embedding it predicts a per-item log-variance ``s = log sigma^2`` of an
isotropic Gaussian around that prediction: the expected squared error per dimension between the
transformed and the true new embedding. Items with a high predicted variance are the ones a
partial backfill should re-embed first.

The trunk is the FCT transformation's (same projections and mixer); the variance head reads the
mixer's last hidden layer. ``forward`` returns only the embedding, so the module can be used
wherever a transformation is (chains, evaluation, the upgrade); :meth:`predict` returns both, and
the exported ONNX graph has both as outputs (``new_embedding``, ``log_variance``).
"""

from __future__ import annotations

import torch
from torch import nn

from fct_registry.models.transformations import TRANSFORMATIONS, FCTTransformation

KIND = "fct-uncertainty"
LOG_VARIANCE_CLAMP = (-20.0, 20.0)
"""``exp`` of the log-variance stays finite in float32 (and bf16 autocast) within this range."""


def predicts_uncertainty(module: nn.Module) -> bool:
    """True when ``module`` offers ``predict(old, side_info) -> (embedding, log_variance)``."""
    return bool(getattr(module, "predicts_uncertainty", False))


class UncertaintyTransformation(FCTTransformation):
    predicts_uncertainty = True

    def __init__(self, old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048):
        super().__init__(old_dim, new_dim, side_info_dim, hidden_dim)
        self.log_variance = nn.Linear(hidden_dim, 1)
        # True: the variance head reads the trunk's features without sending gradients back,
        # so the embedding is trained exactly as the plain transformation's (training only;
        # outputs are the same either way, so it is not part of the spec).
        self.detach_variance = False

    def predict(
        self, old: torch.Tensor, side_info: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embedding [N, new_dim], log_variance [N])``."""
        hidden, head = self.mixer[0](self.mixer_input(old, side_info)), self.mixer[1]
        features = hidden.detach() if self.detach_variance else hidden
        log_var = self.log_variance(features).squeeze(1).clamp(*LOG_VARIANCE_CLAMP)
        return head(hidden), log_var

    def forward(self, old: torch.Tensor, side_info: torch.Tensor) -> torch.Tensor:
        return self.predict(old, side_info)[0]


class WithUncertainty(nn.Module):
    """``module(old, side_info) -> (embedding, log_variance)``: the two-output view the ONNX
    export traces. Also accepts a plain chain whose last hop predicts uncertainty."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module

    def forward(
        self, old: torch.Tensor, side_info: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hops = list(getattr(self.inner, "hops", [self.inner]))
        for hop in hops[:-1]:  # a chain: earlier hops carry the embedding only
            old = hop(old, side_info)
        return hops[-1].predict(old, side_info)


def kind_predicts_uncertainty(kind: str) -> bool:
    """Whether transformations of the registered ``kind`` predict uncertainty (and so train
    with the NLL); the counterpart of ``uses_side_info``."""
    return kind == KIND


def chain_predicts_uncertainty(module: nn.Module) -> bool:
    """A transformation, or a chain whose last hop, predicts uncertainty."""
    hops = list(getattr(module, "hops", [module]))
    return predicts_uncertainty(hops[-1])


@TRANSFORMATIONS.register(KIND)
def fct_uncertainty(
    old_dim: int, new_dim: int, side_info_dim: int, hidden_dim: int = 2048
) -> nn.Module:
    return UncertaintyTransformation(old_dim, new_dim, side_info_dim, hidden_dim)
