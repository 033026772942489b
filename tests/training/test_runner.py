"""Every trainer runs through the one runner (``training.loop.fit`` -> ``run_training``)."""

from __future__ import annotations

import torch

from fct_registry.config import (
    OptimConfig,
    SideInfoConfig,
    TransformationConfig,
    UncertaintyConfig,
    VersionConfig,
)
from fct_registry.data.prepared import TensorSplit
from fct_registry.model_specs import EmbeddingSpec, SideInfoSpec, TransformationSpec
from fct_registry.models.uncertainty import KIND
from fct_registry.training import loop
from fct_registry.training.classifier import train_classifier
from fct_registry.training.contrastive import train_side_info
from fct_registry.training.transformation import (
    train_transformation,
    train_transformation_augmented,
)
from fct_registry.training.uncertainty import train_uncertainty_transformation

OPTIM = OptimConfig(epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0, max_batches=1)
IMAGE = {"backbone": "smallcnn", "backbone_kwargs": {"width": 2}, "in_channels": 1}
IMAGE |= {"mean": [0.5], "std": [0.5]}


def test_every_trainer_goes_through_the_one_runner(tmp_path, monkeypatch):
    calls: list[str] = []
    real = loop.run_training

    def spy(model, num_samples, step, optim, **kwargs):
        calls.append(kwargs["desc"])
        return real(model, num_samples, step, optim, **kwargs)

    monkeypatch.setattr(loop, "run_training", spy)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (16, 1, 12, 12), generator=gen, dtype=torch.uint8)
    split = TensorSplit(images, torch.arange(16) % 2)
    old, side, new = (torch.randn(16, d, generator=gen) for d in (6, 3, 5))
    h_cfg = TransformationConfig.model_validate({"from": 1, "to": 2, "optim": OPTIM})
    h_spec = TransformationSpec(type="fct", old_dim=6, new_dim=5, side_info_dim=3, hidden_dim=8)

    def run(desc: str) -> dict:
        return {"seed": 0, "device": torch.device("cpu"), "checkpoint": tmp_path / f"{desc}.pt"}

    emb = EmbeddingSpec(embedding_dim=6, num_classes=2, **IMAGE)
    cfg = VersionConfig(optim=OPTIM)
    new_model, _ = train_classifier(cfg, split, emb, fingerprint="c", desc="classifier", **run("c"))
    side_spec = SideInfoSpec(dim=3, projection_dim=4, **IMAGE)
    side_cfg = SideInfoConfig(optim=OPTIM)
    side_model, _ = train_side_info(
        side_cfg, split, side_spec, fingerprint="s", desc="side-info", **run("s")
    )
    train_transformation(h_cfg, old, side, new, h_spec, fingerprint="h", desc="h", **run("h"))
    old_model, _ = train_classifier(cfg, split, emb, fingerprint="o", desc="old", **run("o"))
    wide = TransformationSpec(type="fct", old_dim=6, new_dim=6, side_info_dim=3, hidden_dim=8)
    train_transformation_augmented(
        h_cfg, split, old_model, side_model, new_model, wide, fingerprint="a", desc="augmented",
        **run("a"),
    )  # fmt: skip
    train_uncertainty_transformation(
        UncertaintyConfig(p2c_weight=0.0), OPTIM, old, side, new, h_spec | {"type": KIND},
        fingerprint="u", desc="uncertainty", **run("u"),
    )  # fmt: skip
    assert calls == ["classifier", "side-info", "h", "old", "augmented", "uncertainty"]
