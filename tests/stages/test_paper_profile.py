"""The ``paper`` profile (params-paper.yaml: ResNet-50 at 224 px with the ImageNet stem, 128-d
embeddings and side-info, ImageFolder sources) runs its whole pipeline on a tiny generated RGB
image tree. Only sizes and steps are overridden, the way a user would with ``dvc exp run -S``;
the architecture, input shape and resize are the profile's."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fct_registry.layout import Layout
from fct_registry.models.io import load_model
from fct_registry.stages.params import check_names
from fct_registry.stages.run_all import run_pipeline
from tests.conftest import ROOT
from tests.data.images import write_imagefolder

TINY_OPTIM = {"epochs": 1, "batch_size": 4, "max_batches": 1}


def set_param(raw: dict, key: str, value: str) -> None:
    """``dvc exp run -S key=value``: a dotted path into params, the value parsed as YAML."""
    *path, last = key.split(".")
    node = raw
    for part in path:
        node = node[part if part in node else int(part)]
    node[last] = yaml.safe_load(value)


def paper_params(train: str, test: str) -> dict:
    raw = yaml.safe_load((ROOT / "params-paper.yaml").read_text())
    overrides = {
        "data.source.train": train,
        "data.source.test": test,
        "data.stats_sample": "8",
        "data.workers": "1",
        "versions.1.classes": "[0, 1]",  # half of the tiny tree's classes, as 0-49 of 100
        "evaluation.bootstrap_resamples": "100",
    }
    sections = ["side_info", *(f"versions.{v}" for v in raw["versions"])]
    sections += [f"transformations.{t}" for t in raw["transformations"]]
    for section in sections:
        for key, value in TINY_OPTIM.items():
            overrides[f"{section}.optim.{key}"] = str(value)
    for key, value in overrides.items():
        set_param(raw, key, value)
    return raw


@pytest.mark.slow
def test_paper_profile_pipeline_on_a_tiny_image_tree(tmp_path):
    from fct_registry.config import parse_params

    write_imagefolder(tmp_path / "train", n=12, rgb=True, classes=3)
    write_imagefolder(tmp_path / "test", n=9, fmt="JPEG", rgb=True, classes=3)
    params = check_names(
        parse_params(paper_params(str(tmp_path / "train"), str(tmp_path / "test")))
    )
    assert params.versions[2].backbone.name == "resnet50"
    assert params.data.input_shape == [3, 224, 224] and params.data.resize == 256
    layout = Layout(tmp_path / "outputs")
    torch.manual_seed(0)
    report = run_pipeline(params, layout)

    assert sorted(p.name for p in layout.data.iterdir()) == ["info.json", "skipped.json"]
    model, spec = load_model(layout.version(2))
    assert spec["input_shape"] == [3, 224, 224] and spec["embedding_dim"] == 128
    assert spec["backbone_kwargs"] == {"stem": "imagenet"}
    assert spec["preprocess"]["resize"] == 256
    assert model.backbone.conv1.kernel_size == (7, 7)  # the standard stem, not the CIFAR one
    side = load_file(str(layout.side_info_embeddings))
    assert side["train"].shape == (12, 128) and side["test"].shape == (9, 128)
    v1 = load_file(str(layout.version_embeddings(1)))
    assert v1["test"].shape == (9, 128) and torch.isfinite(v1["test"]).all()
    assert (layout.transformation("v1_to_v2") / "model.safetensors").exists()
    assert report
