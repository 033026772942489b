"""Batched inference: images or embeddings in, float32 embeddings out (no grad).

Extraction runs in float32 on every device: these vectors are stored in galleries and used as
regression targets, so they must not carry bf16 rounding from training's autocast."""

from __future__ import annotations

import torch
from torch import nn


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


@torch.no_grad()
def embed_images(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """Embed uint8 ``[N, C, H, W]`` images with ``model`` (in eval mode) in batches."""
    model.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = images_to_float(images[start : start + batch_size].to(device))
        with torch.autocast(device.type, enabled=False):  # also inside a caller's autocast
            out.append(model(x.float()).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def apply_transformation(
    model: nn.Module,
    old: torch.Tensor,
    side_info: torch.Tensor,
    device: torch.device,
    batch_size: int = 8192,
) -> torch.Tensor:
    model.eval().to(device)
    out = []
    for s in range(0, len(old), batch_size):
        with torch.autocast(device.type, enabled=False):
            x, side = old[s : s + batch_size].to(device), side_info[s : s + batch_size].to(device)
            out.append(model(x.float(), side.float()).float().cpu())
    return torch.cat(out)
