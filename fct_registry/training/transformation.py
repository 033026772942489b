"""Training of an FCT transformation: regress the new model's embeddings (MSE) from the old
embeddings and the side-info of the same training images.

The images are the target version's own training data (its classes), as in apple/ml-fct, where
``h`` is trained on the new model's training set. Two feature sources:

* stored (default): the embeddings of un-augmented images saved by the version stages. Only
  vectors are read, so this is cheap next to training a backbone.
* augmented: old, new and side-info features recomputed from freshly augmented images every
  batch (ml-fct's on-the-fly features); three backbone forwards per batch.

Targets are float32 in both cases, also when the step itself runs under bf16 autocast.
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import nn
from torch.nn import functional

from fct_registry.config import TransformationConfig
from fct_registry.data.augment import classifier_augment
from fct_registry.data.splits import Batch, Split
from fct_registry.model_specs import TransformationSpec
from fct_registry.models.transformations import uses_side_info
from fct_registry.training.distributed import context
from fct_registry.training.embed import images_to_float
from fct_registry.training.loop import LoopResult, RunArgs, fit, seeded_model


def transformation_spec(
    cfg: TransformationConfig, old_dim: int, new_dim: int, side_info_dim: int
) -> TransformationSpec:
    return TransformationSpec(
        type=cfg.kind,
        source=cfg.source,
        target=cfg.target,
        old_dim=old_dim,
        new_dim=new_dim,
        side_info_dim=side_info_dim if uses_side_info(cfg.kind) else 0,
        hidden_dim=cfg.hidden_dim,
    )


def training_rows(labels: torch.Tensor, classes: list[int] | None) -> torch.Tensor:
    """Indices of the training images of ``classes`` (all images when ``None``)."""
    if classes is None:
        return torch.arange(len(labels))
    return torch.isin(labels, torch.as_tensor(classes)).nonzero().flatten()


def train_transformation(
    cfg: TransformationConfig,
    old: torch.Tensor,
    side_info: torch.Tensor,
    new: torch.Tensor,
    spec: TransformationSpec,
    **run: Unpack[RunArgs],
) -> tuple[torch.nn.Module, LoopResult]:
    """Train on stored features (rows already restricted to the training images to use)."""
    device, ctx = run["device"], context()
    model = seeded_model(spec, run["seed"])
    old, side_info = old.to(device), side_info.to(device)
    new = new.to(device, torch.float32)

    def step(
        net: nn.Module, indices: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        indices = ctx.shard(indices).to(device)
        pred = net(old[indices], side_info[indices])
        return functional.mse_loss(pred.float(), new[indices]), {}

    return fit(model, step, len(old), cfg.optim, **run)


@torch.no_grad()
def _features(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    # float32 even when the surrounding step runs under bf16 autocast: these are the targets.
    with torch.autocast(device.type, enabled=False):
        return model(x.float()).float()


def train_transformation_augmented(
    cfg: TransformationConfig,
    images: Split,
    old_model: nn.Module,
    side_info_model: nn.Module,
    new_model: nn.Module,
    spec: TransformationSpec,
    **run: Unpack[RunArgs],
) -> tuple[torch.nn.Module, LoopResult]:
    """Train on features recomputed from augmented ``images`` (a split of the rows to use)."""
    device, ctx = run["device"], context()
    model = seeded_model(spec, run["seed"])
    frozen = [m.to(device).eval().requires_grad_(False) for m in (old_model, side_info_model)]
    new_model = new_model.to(device).eval().requires_grad_(False)

    def step(net: nn.Module, batch: Batch, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        x = classifier_augment(images_to_float(batch.images), gen, part=batch.part)
        if batch.part is None:  # augmentations drawn for the global batch: same as one process
            x = ctx.shard(x)
        old, side = (_features(m, x, device) for m in frozen)
        target = _features(new_model, x, device)
        return functional.mse_loss(net(old, side).float(), target), {}

    return fit(model, step, images, cfg.optim, **run)
