"""Batched, per-sample image augmentations on the training device (no per-image Python loop).

Each sample gets its own random affine (crop-scale, translation, flip) through one
``affine_grid``/``grid_sample`` call; randomness comes from an explicit generator so that a
resumed run sees the same augmentations as an uninterrupted one.

``part=(offset, total)``: ``x`` holds rows ``offset : offset + len(x)`` of a global batch of
``total`` (one rank's share under torchrun); the draws are made for the whole global batch and
sliced, so each row gets the augmentation it would get in one process.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from fct_registry.numerics import sqrt_

Part = tuple[int, int] | None


def _rand(n: int, gen: torch.Generator, part: Part) -> torch.Tensor:
    if part is None:
        return torch.rand(n, generator=gen)
    offset, total = part
    return torch.rand(total, generator=gen)[offset : offset + n]


def _uniform(
    n: int, low: float, high: float, gen: torch.Generator, device: torch.device, part: Part = None
):
    return _rand(n, gen, part).to(device) * (high - low) + low


def random_affine(
    x: torch.Tensor,
    gen: torch.Generator,
    *,
    scale: tuple[float, float],
    max_shift: float,
    flip: bool = True,
    part: Part = None,
) -> torch.Tensor:
    """Random zoom-in crop (``scale`` = kept area fraction), shift and horizontal flip."""
    n, device = x.shape[0], x.device
    side = sqrt_(_uniform(n, *scale, gen, device, part))  # fraction of the side kept
    room = (1 - side).clamp_min(0)
    tx = _uniform(n, -1, 1, gen, device, part) * (room + max_shift)
    ty = _uniform(n, -1, 1, gen, device, part) * (room + max_shift)
    sx = side * (torch.where(_rand(n, gen, part).to(device) < 0.5, -1.0, 1.0) if flip else 1.0)
    theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = sx, side
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = functional.affine_grid(theta, list(x.shape), align_corners=False)
    return functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def classifier_augment(x: torch.Tensor, gen: torch.Generator, part: Part = None) -> torch.Tensor:
    """Light augmentation for supervised training: small shifts and flips."""
    return random_affine(x, gen, scale=(1.0, 1.0), max_shift=0.15, part=part)


def simclr_augment(x: torch.Tensor, gen: torch.Generator, part: Part = None) -> torch.Tensor:
    """SimCLR-style view: strong crop, flip, brightness/contrast jitter and random erasing of
    colour (grayscale for RGB inputs). ``x`` is float in [0, 1]."""
    n, device = x.shape[0], x.device
    x = random_affine(x, gen, scale=(0.25, 1.0), max_shift=0.0, part=part)
    brightness = _uniform(n, 0.6, 1.4, gen, device, part).view(n, 1, 1, 1)
    contrast = _uniform(n, 0.6, 1.4, gen, device, part).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean) * brightness
    if x.shape[1] == 3:
        gray = (_rand(n, gen, part).to(device) < 0.2).view(n, 1, 1, 1)
        x = torch.where(gray, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return x.clamp(0, 1)
