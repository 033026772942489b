"""Backbones, registered by name: for small images by default; the ResNets also with the standard
ImageNet stem (``stem: imagenet``, 224 px inputs: the paper's setting).

Every builder takes ``in_channels`` plus its own keyword arguments and returns a module mapping
``[N, C, H, W]`` float images to ``[N, out_features]`` features, with ``out_features`` set.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models import resnet50 as tv_resnet50

from fct_registry._registry import Registry
from fct_registry.errors import ConfigError

BACKBONES: Registry[nn.Module] = Registry("backbone")


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """A fast VGG-style CNN for CPU runs: three stages of width w, 2w, 4w, global average pool."""

    def __init__(self, in_channels: int, width: int = 32, depth: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for stage, mult in enumerate((1, 2, 4)):
            for _ in range(depth):
                layers += _conv_bn(cin, width * mult)
                cin = width * mult
            if stage < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


STEMS = ("small", "imagenet")


def _small_image_resnet(net: nn.Module, in_channels: int, stem: str = "small") -> nn.Module:
    if stem not in STEMS:
        raise ConfigError(f"backbone kwarg stem must be one of {', '.join(STEMS)}, got {stem!r}")
    if stem == "small":
        # CIFAR-style stem: 3x3 stride-1 conv and no max-pool keep 28-32 px images from vanishing.
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:  # torchvision's 7x7 stride-2 conv and max-pool, for other channels
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    net.out_features = net.fc.in_features
    net.fc = nn.Identity()
    return net


@BACKBONES.register("smallcnn")
def smallcnn(in_channels: int, width: int = 32, depth: int = 1) -> nn.Module:
    return SmallCNN(in_channels, width=width, depth=depth)


@BACKBONES.register("resnet18")
def resnet18(in_channels: int, stem: str = "small") -> nn.Module:
    return _small_image_resnet(tv_resnet18(weights=None), in_channels, stem)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int, stem: str = "small") -> nn.Module:
    """ResNet-50; ``stem: imagenet`` keeps torchvision's stem (224 px inputs, 7x7 s2 + pool)."""
    return _small_image_resnet(tv_resnet50(weights=None), in_channels, stem)
