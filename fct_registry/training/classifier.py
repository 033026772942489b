"""Supervised training of one family version (cross-entropy with label smoothing), optionally
with BCT's influence loss: the new embedding must also be classified by the old, frozen classifier
(Shen et al., CVPR 2020), on samples of the classes the old model knew."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fct_registry.config import VersionConfig
from fct_registry.data.augment import classifier_augment
from fct_registry.data.prepared import TensorSplit
from fct_registry.models.embedding import EmbeddingModel
from fct_registry.training.distributed import context
from fct_registry.training.embed import images_to_float
from fct_registry.training.loop import LoopResult, prepare_model, run_training, unwrap


@dataclass(frozen=True)
class BctInfluence:
    old_classifier: torch.nn.Linear
    old_classes: list[int]
    weight: float


def embedding_spec(cfg: VersionConfig, info: dict) -> dict:
    channels, height, width = info["shape"]
    return {
        "kind": "embedding",
        "backbone": cfg.backbone.name,
        "backbone_kwargs": dict(cfg.backbone.kwargs),
        "in_channels": channels,
        "input_shape": [channels, height, width],
        "embedding_dim": cfg.embedding_dim,
        "num_classes": len(info["classes"]),
        "mean": info["mean"],
        "std": info["std"],
    }


def train_classifier(
    cfg: VersionConfig,
    train: TensorSplit,
    spec: dict,
    *,
    seed: int,
    device: torch.device,
    checkpoint: Path,
    fingerprint: str,
    desc: str,
    bct: BctInfluence | None = None,
) -> tuple[EmbeddingModel, LoopResult]:
    torch.manual_seed(seed)
    model = EmbeddingModel(
        spec["backbone"],
        spec["backbone_kwargs"],
        spec["in_channels"],
        spec["embedding_dim"],
        spec["num_classes"],
        spec["mean"],
        spec["std"],
    )
    net = prepare_model(model.to(device, memory_format=torch.channels_last), device)
    ctx = context()
    data = train.subset(cfg.classes).to(device)
    old_classes = None
    if bct is not None:
        bct.old_classifier.to(device).requires_grad_(False)
        old_classes = torch.as_tensor(bct.old_classes, device=device)

    def step(indices: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        indices = indices.to(device)
        x = images_to_float(data.images[indices])
        if cfg.augment == "flip_crop":
            x = classifier_augment(x, gen)  # drawn for the global batch: same as 1 process
        x, y = ctx.shard(x), ctx.shard(data.labels[indices])
        emb = net(x.contiguous(memory_format=torch.channels_last))
        logits = unwrap(net).classifier(emb)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        logs = {"accuracy": float((logits.argmax(1) == y).float().mean())}
        if bct is not None:
            seen = torch.isin(y, old_classes)
            if seen.any():
                influence = F.cross_entropy(
                    bct.old_classifier(emb[seen]), y[seen], label_smoothing=cfg.label_smoothing
                )
                loss = loss + bct.weight * influence
                logs["influence_loss"] = float(influence.detach())
        return loss, logs

    result = run_training(
        net,
        None,
        len(data.labels),
        step,
        cfg.optim,
        seed=seed,
        device=device,
        checkpoint=checkpoint,
        fingerprint=fingerprint,
        desc=desc,
    )
    return unwrap(net), result
