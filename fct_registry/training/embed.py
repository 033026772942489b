"""Batched inference: images or embeddings in, float32 embeddings out (no grad).

Extraction runs in float32 on every device: these vectors are stored in galleries and used as
regression targets, so they must not carry bf16 rounding from training's autocast."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fct_registry.data.splits import Split, ordered_images
from fct_registry.models.external import ExternalImageModel

CPU_FORWARD_BATCH = 64


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


@torch.no_grad()
def embed_images(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """Embed uint8 ``[N, C, H, W]`` images with ``model`` (in eval mode) in batches."""
    batches = (images[s : s + batch_size] for s in range(0, len(images), batch_size))
    return _embed_batches(model, batches, device)


def embed_rows(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int
) -> np.ndarray:
    """One batch of uint8 images through ``model``, as float32 NumPy rows (a gallery's)."""
    if isinstance(model, ExternalImageModel) and device.type == "cpu":
        # onnxruntime: one call per batch (its arena, not torch's activations) and no torch
        # thread pool woken beside onnxruntime's (benchmarks/bench_external.py).
        return model.embed_uint8(images)
    # Torch on CPU: forward passes of at most 64 images: same speed, a quarter of the
    # activations, so the process's peak stays flat over a long run.
    step = batch_size if device.type == "cuda" else min(batch_size, CPU_FORWARD_BATCH)
    return embed_images(model, images, device, batch_size=step).numpy()


@torch.no_grad()
def embed_split(
    model: nn.Module, split: Split, device: torch.device, batch_size: int = 1024
) -> torch.Tensor:
    """Embed every image of a training split in order (streamed from files when it is a
    streaming split: memory holds the ``[N, d]`` output, not the images)."""
    return _embed_batches(model, ordered_images(split, batch_size), device)


def _embed_batches(model: nn.Module, batches, device: torch.device) -> torch.Tensor:
    model.eval().to(device)
    out = []
    for images in batches:
        x = images_to_float(images.to(device))
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
