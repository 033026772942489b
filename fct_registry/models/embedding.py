"""The embedding model of one family version and the side-info extractor.

Both take float images in [0, 1] and normalise internally, so exported graphs (ONNX, MLflow) need
no separate preprocessing step.
"""

from __future__ import annotations

import torch
from torch import nn

from fct_registry.models.backbones import BACKBONES


class Normalize(nn.Module):
    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageEncoder(nn.Module):
    """normalise -> backbone -> linear embedding: the part both image models share."""

    def __init__(self, backbone: nn.Module, dim: int, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)  # registered first: the stored weights' key order
        self.backbone = backbone
        self.embedding = nn.Linear(backbone.out_features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.backbone(self.normalize(x)))


class EmbeddingModel(ImageEncoder):
    """backbone -> linear embedding (what retrieval uses) -> linear classifier (training only)."""

    def __init__(
        self,
        backbone: str,
        backbone_kwargs: dict,
        in_channels: int,
        embedding_dim: int,
        num_classes: int,
        mean: list[float],
        std: list[float],
    ) -> None:
        net = BACKBONES.build(backbone, in_channels=in_channels, **backbone_kwargs)
        super().__init__(net, embedding_dim, mean, std)
        self.classifier = nn.Linear(embedding_dim, num_classes)


class SideInfoModel(ImageEncoder):
    """SimCLR encoder: ``forward`` gives the side-info vector; ``project`` feeds NT-Xent."""

    def __init__(
        self,
        backbone: str,
        backbone_kwargs: dict,
        in_channels: int,
        dim: int,
        projection_dim: int,
        mean: list[float],
        std: list[float],
    ) -> None:
        net = BACKBONES.build(backbone, in_channels=in_channels, **backbone_kwargs)
        super().__init__(net, dim, mean, std)
        self.projector = nn.Sequential(
            nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, projection_dim)
        )

    def project(self, side_info: torch.Tensor) -> torch.Tensor:
        return self.projector(side_info)
