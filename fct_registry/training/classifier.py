"""Supervised training of one family version (cross-entropy with label smoothing on the version's
own labels: its classes, optionally mapped to coarser groups by ``label_map``), optionally with a
backward-compatibility term tying the new embedding to an old version's:

* :class:`BctInfluence` (Shen et al., CVPR 2020): the new embedding must also be classified by the
  old, frozen classifier, on samples of the classes the old model knew (old labels);
* :class:`BctAlignment`: the new embedding of each augmented image is pulled (squared L2) towards
  the frozen old model's embedding of the same image. The influence loss only constrains the
  directions the old classifier reads (about as many as it has classes), so its new/old retrieval
  can fall far below old/old; alignment constrains the whole embedding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fct_registry.config import VersionConfig
from fct_registry.data.augment import classifier_augment
from fct_registry.data.splits import Batch, Split, split_batches
from fct_registry.models.embedding import EmbeddingModel
from fct_registry.training.distributed import context
from fct_registry.training.embed import images_to_float
from fct_registry.training.loop import LoopResult, prepare_model, run_training, unwrap


@dataclass(frozen=True)
class BctInfluence:
    old_classifier: torch.nn.Linear
    old_classes: list[int]
    weight: float
    old_label_map: list[int] | None = None  # dataset class -> old training label


@dataclass(frozen=True)
class BctAlignment:
    old_model: torch.nn.Module
    old_classes: list[int]
    weight: float
    init_from_old: bool = False  # start from the old weights (same backbone) instead of scratch


BctTerm = BctInfluence | BctAlignment


def label_lookup(label_map: list[int] | None, num_classes: int) -> torch.Tensor:
    """Dataset class id -> training label (identity without a map)."""
    return torch.as_tensor(label_map if label_map is not None else list(range(num_classes)))


def embedding_spec(cfg: VersionConfig, info: dict) -> dict:
    channels, height, width = info["shape"]
    spec = {
        "kind": "embedding",
        "backbone": cfg.backbone.name,
        "backbone_kwargs": dict(cfg.backbone.kwargs),
        "in_channels": channels,
        "input_shape": [channels, height, width],
        "embedding_dim": cfg.embedding_dim,
        "num_classes": cfg.num_labels(len(info["classes"])),
        "mean": info["mean"],
        "std": info["std"],
    }
    if "transform" in info:  # streamed from files: how images were decoded and cropped
        spec["preprocess"] = info["transform"]
    return spec


def train_classifier(
    cfg: VersionConfig,
    train: Split,
    spec: dict,
    *,
    seed: int,
    device: torch.device,
    checkpoint: Path,
    fingerprint: str,
    desc: str,
    bct: BctTerm | None = None,
    checkpoint_every: int | None = None,
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
    if isinstance(bct, BctAlignment) and bct.init_from_old:
        # every weight but the classifier, whose labels differ; the shapes must match
        state = {k: v for k, v in bct.old_model.state_dict().items() if "classifier" not in k}
        model.load_state_dict(state, strict=False)
    net = prepare_model(model.to(device, memory_format=torch.channels_last), device)
    ctx = context()
    data = train.subset(cfg.classes).to(device)
    num_classes = int(train.labels.max()) + 1 if cfg.label_map is None else len(cfg.label_map)
    lut = label_lookup(cfg.label_map, num_classes).to(device)
    old_classes = old_lut = None
    if bct is not None:
        old_classes = torch.as_tensor(bct.old_classes, device=device)
    if isinstance(bct, BctInfluence):
        bct.old_classifier.to(device).requires_grad_(False)
        old_lut = label_lookup(bct.old_label_map, max(num_classes, len(bct.old_label_map or [])))
        old_lut = old_lut.to(device)
    elif isinstance(bct, BctAlignment):
        bct.old_model.to(device).eval().requires_grad_(False)

    def fetch(indices):
        return split_batches(data, indices, device=device, rank=ctx.rank, world=ctx.world_size)

    def step(batch: Batch, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        x = images_to_float(batch.images)
        if cfg.augment == "flip_crop":
            # drawn for the global batch: the same as one process
            x = classifier_augment(x, gen, part=batch.part)
        y = batch.labels
        if batch.part is None:  # the whole global batch was read: take this rank's rows
            x, y = ctx.shard(x), ctx.shard(y)
        x = x.contiguous(memory_format=torch.channels_last)
        emb = net(x)
        logits = unwrap(net).classifier(emb)
        loss = F.cross_entropy(logits, lut[y], label_smoothing=cfg.label_smoothing)
        logs = {"accuracy": float((logits.argmax(1) == lut[y]).float().mean())}
        if bct is None:
            return loss, logs
        seen = torch.isin(y, old_classes)
        if not seen.any():
            return loss, logs
        if isinstance(bct, BctInfluence):
            term = F.cross_entropy(
                bct.old_classifier(emb[seen]), old_lut[y[seen]], label_smoothing=cfg.label_smoothing
            )
            logs["influence_loss"] = float(term.detach())
        else:
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                target = bct.old_model(x[seen].float()).float()  # float32 target
            term = (emb[seen].float() - target).pow(2).sum(1).mean()
            logs["alignment_loss"] = float(term.detach())
        return loss + bct.weight * term, logs

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
        fetch=fetch,
        checkpoint_every=checkpoint_every,
    )
    return unwrap(net), result
