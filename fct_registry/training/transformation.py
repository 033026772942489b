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

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fct_registry.config import TransformationConfig
from fct_registry.data.augment import classifier_augment
from fct_registry.data.splits import Batch, Split, split_batches
from fct_registry.models.transformations import TRANSFORMATIONS, uses_side_info
from fct_registry.training.distributed import context
from fct_registry.training.embed import images_to_float
from fct_registry.training.loop import LoopResult, prepare_model, run_training, unwrap


def transformation_spec(
    cfg: TransformationConfig, old_dim: int, new_dim: int, side_info_dim: int
) -> dict:
    return {
        "kind": "transformation",
        "type": cfg.kind,
        "from": cfg.source,
        "to": cfg.target,
        "old_dim": old_dim,
        "new_dim": new_dim,
        "side_info_dim": side_info_dim if uses_side_info(cfg.kind) else 0,
        "hidden_dim": cfg.hidden_dim,
    }


def training_rows(labels: torch.Tensor, classes: list[int] | None) -> torch.Tensor:
    """Indices of the training images of ``classes`` (all images when ``None``)."""
    if classes is None:
        return torch.arange(len(labels))
    return torch.isin(labels, torch.as_tensor(classes)).nonzero().flatten()


def _build(spec: dict, device: torch.device) -> nn.Module:
    return TRANSFORMATIONS.build(
        spec["type"],
        old_dim=spec["old_dim"],
        new_dim=spec["new_dim"],
        side_info_dim=spec["side_info_dim"],
        hidden_dim=spec["hidden_dim"],
    ).to(device)


def train_transformation(
    cfg: TransformationConfig,
    old: torch.Tensor,
    side_info: torch.Tensor,
    new: torch.Tensor,
    spec: dict,
    *,
    seed: int,
    device: torch.device,
    checkpoint: Path,
    fingerprint: str,
    desc: str,
) -> tuple[torch.nn.Module, LoopResult]:
    """Train on stored features (rows already restricted to the training images to use)."""
    torch.manual_seed(seed)
    net = prepare_model(_build(spec, device), device)
    ctx = context()
    old, side_info = old.to(device), side_info.to(device)
    new = new.to(device, torch.float32)

    def step(indices: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        indices = ctx.shard(indices).to(device)
        pred = net(old[indices], side_info[indices])
        return F.mse_loss(pred.float(), new[indices]), {}

    result = run_training(
        net,
        None,
        len(old),
        step,
        cfg.optim,
        seed=seed,
        device=device,
        checkpoint=checkpoint,
        fingerprint=fingerprint,
        desc=desc,
    )
    return unwrap(net), result


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
    spec: dict,
    *,
    seed: int,
    device: torch.device,
    checkpoint: Path,
    fingerprint: str,
    desc: str,
    checkpoint_every: int | None = None,
) -> tuple[torch.nn.Module, LoopResult]:
    """Train on features recomputed from augmented ``images`` (a split of the rows to use)."""
    torch.manual_seed(seed)
    net = prepare_model(_build(spec, device), device)
    ctx = context()
    images = images.to(device)
    frozen = [m.to(device).eval().requires_grad_(False) for m in (old_model, side_info_model)]
    new_model = new_model.to(device).eval().requires_grad_(False)

    def fetch(indices):
        return split_batches(images, indices, device=device, rank=ctx.rank, world=ctx.world_size)

    def step(batch: Batch, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        x = classifier_augment(images_to_float(batch.images), gen, part=batch.part)
        if batch.part is None:  # augmentations drawn for the global batch: same as one process
            x = ctx.shard(x)
        old, side = (_features(m, x, device) for m in frozen)
        target = _features(new_model, x, device)
        return F.mse_loss(net(old, side).float(), target), {}

    result = run_training(
        net,
        None,
        len(images.labels),
        step,
        cfg.optim,
        seed=seed,
        device=device,
        checkpoint=checkpoint,
        fingerprint=fingerprint,
        desc=desc,
        fetch=fetch,
        checkpoint_every=checkpoint_every,
    )
    return unwrap(net), result
