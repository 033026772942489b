"""Training of an FCT transformation: regress the new model's embeddings (MSE) from the old
embeddings and the side-info of the same training images. Only stored vectors are read, so this
is cheap next to training a backbone."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fct_registry.config import TransformationConfig
from fct_registry.models.transformations import TRANSFORMATIONS, uses_side_info
from fct_registry.training.distributed import context
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
    torch.manual_seed(seed)
    model = TRANSFORMATIONS.build(
        spec["type"],
        old_dim=spec["old_dim"],
        new_dim=spec["new_dim"],
        side_info_dim=spec["side_info_dim"],
        hidden_dim=spec["hidden_dim"],
    ).to(device)
    net = prepare_model(model, device)
    ctx = context()
    old, side_info, new = old.to(device), side_info.to(device), new.to(device)

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
