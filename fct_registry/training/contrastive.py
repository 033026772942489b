"""Self-supervised SimCLR training of the side-info extractor (no labels are read)."""

from __future__ import annotations

from typing import Unpack

import torch
from torch import nn
from torch.nn import functional

from fct_registry.config import SideInfoConfig
from fct_registry.data.augment import simclr_augment
from fct_registry.data.splits import Batch, Split
from fct_registry.model_specs import SideInfoSpec, image_fields
from fct_registry.models.embedding import SideInfoModel
from fct_registry.training.distributed import context, gather_batch
from fct_registry.training.embed import images_to_float
from fct_registry.training.loop import LoopResult, RunArgs, fit, seeded_model, unwrap


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020): each view's positive is the other view of the same image;
    the other 2N-2 views in the batch are negatives."""
    n = z1.shape[0]
    z = functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / temperature
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return functional.cross_entropy(sim.float(), targets)


def side_info_spec(cfg: SideInfoConfig, info: dict) -> SideInfoSpec:
    return SideInfoSpec(
        name=cfg.name,
        dim=cfg.dim,
        projection_dim=cfg.projection_dim,
        **image_fields(cfg.backbone, info),
    )


def train_side_info(
    cfg: SideInfoConfig, images: Split, spec: SideInfoSpec, **run: Unpack[RunArgs]
) -> tuple[SideInfoModel, LoopResult]:
    """SimCLR on ``images`` (a split: its labels are never read)."""
    ctx = context()

    def step(
        net: nn.Module, batch: Batch, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        x = images_to_float(batch.images)
        # Views drawn for the global batch, then this rank's shard; negatives are all-gathered,
        # so the loss is the single-process one on every rank.
        v1, v2 = simclr_augment(x, gen, part=batch.part), simclr_augment(x, gen, part=batch.part)
        if batch.part is None:
            v1, v2 = ctx.shard(v1), ctx.shard(v2)
        z = unwrap(net).project(
            net(torch.cat([v1, v2]).contiguous(memory_format=torch.channels_last))
        )
        z1, z2 = z.chunk(2)
        return nt_xent(gather_batch(z1), gather_batch(z2), cfg.temperature), {}

    return fit(seeded_model(spec, run["seed"]), step, images, cfg.optim, **run)
