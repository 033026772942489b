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
from typing import Unpack

import torch
from torch.nn import functional

from fct_registry.config import VersionConfig
from fct_registry.data.augment import classifier_augment
from fct_registry.data.splits import Batch, Split
from fct_registry.model_specs import EmbeddingSpec, image_fields
from fct_registry.models.embedding import EmbeddingModel
from fct_registry.training.distributed import context
from fct_registry.training.embed import images_to_float
from fct_registry.training.loop import LoopResult, RunArgs, fit, seeded_model, unwrap


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


def embedding_spec(cfg: VersionConfig, info: dict) -> EmbeddingSpec:
    classes = len(info["classes"])
    return EmbeddingSpec(
        embedding_dim=cfg.embedding_dim,
        num_classes=cfg.num_labels(classes),
        **image_fields(cfg.backbone, info),
    )


def train_classifier(
    cfg: VersionConfig,
    train: Split,
    spec: EmbeddingSpec,
    *,
    bct: BctTerm | None = None,
    **run: Unpack[RunArgs],
) -> tuple[EmbeddingModel, LoopResult]:
    device = run["device"]
    model = seeded_model(spec, run["seed"])
    if isinstance(bct, BctAlignment) and bct.init_from_old:
        # every weight but the classifier, whose labels differ; the shapes must match
        state = {k: v for k, v in bct.old_model.state_dict().items() if "classifier" not in k}
        model.load_state_dict(state, strict=False)
    ctx = context()
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

    def step(
        net: torch.nn.Module, batch: Batch, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
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
        loss = functional.cross_entropy(logits, lut[y], label_smoothing=cfg.label_smoothing)
        logs = {"accuracy": float((logits.argmax(1) == lut[y]).float().mean())}
        if bct is None:
            return loss, logs
        seen = torch.isin(y, old_classes)
        if not seen.any():
            return loss, logs
        if isinstance(bct, BctInfluence):
            term = functional.cross_entropy(
                bct.old_classifier(emb[seen]), old_lut[y[seen]], label_smoothing=cfg.label_smoothing
            )
            logs["influence_loss"] = float(term.detach())
        else:
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                target = bct.old_model(x[seen].float()).float()  # float32 target
            term = (emb[seen].float() - target).pow(2).sum(1).mean()
            logs["alignment_loss"] = float(term.detach())
        return loss + bct.weight * term, logs

    return fit(model, step, train.subset(cfg.classes), cfg.optim, **run)
