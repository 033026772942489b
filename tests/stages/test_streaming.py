"""The pipeline on images streamed from files (``data.source``): prepare writes info.json only,
every training stage reads the ImageFolder tree through a DataLoader, embeddings are streamed,
and evaluation scores them; bad images are skipped or refused, a changed collection is caught."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fct_registry.config import parse_params
from fct_registry.data.prepared import load_info
from fct_registry.data.splits import StreamSplit, open_split
from fct_registry.errors import DataError
from fct_registry.layout import Layout
from fct_registry.stages.evaluate import evaluate_stage
from fct_registry.stages.prepare import prepare_stage
from fct_registry.stages.side_info import side_info_stage
from fct_registry.stages.transformation import transformation_stage
from fct_registry.stages.version import version_stage
from tests.data.images import write_imagefolder

OPTIM = {"epochs": 2, "batch_size": 16, "lr": 0.002, "weight_decay": 0.0, "max_batches": 2}


def stream_params(train: str, test: str, **data) -> dict:
    small = {"name": "smallcnn", "kwargs": {"width": 4}}
    return {
        "family": "tiny",
        "data": {
            "source": {"train": train, "test": test},
            "input_shape": [1, 28, 28],
            "resize": None,
            "workers": 1,
            "stats_sample": 20,
            **data,
        },
        "side_info": {
            "backbone": small,
            "dim": 8,
            "projection_dim": 8,
            "trained_with": 1,
            "optim": OPTIM,
        },
        "versions": {
            1: {"backbone": small, "embedding_dim": 4, "label_map": [0, 0, 1], "optim": OPTIM},
            2: {"backbone": small, "embedding_dim": 8, "optim": OPTIM},
        },
        "transformations": {
            "v1_to_v2": {"from": 1, "to": 2, "hidden_dim": 16, "optim": OPTIM},
            "v1_to_v2_aug": {
                "from": 1,
                "to": 2,
                "hidden_dim": 16,
                "features": "augmented",
                "optim": OPTIM,
            },
        },
        "evaluation": {"bootstrap_resamples": 100},
    }


@pytest.fixture
def trees(tmp_path):
    write_imagefolder(tmp_path / "train", n=60, classes=3)
    write_imagefolder(tmp_path / "test", n=30, fmt="JPEG", classes=3)
    return tmp_path / "train", tmp_path / "test"


def test_streaming_pipeline_end_to_end(trees, tmp_path):
    params = parse_params(stream_params(str(trees[0]), str(trees[1])))
    layout = Layout(tmp_path / "outputs")
    info = prepare_stage(params, layout)
    assert sorted(p.name for p in layout.data.iterdir()) == ["info.json", "skipped.json"]
    assert info["classes"] == ["class-0", "class-1", "class-2"]
    assert info["shape"] == [1, 28, 28] and len(info["mean"]) == 1
    assert info["train"]["size"] == 60 and sum(info["train"]["per_class"]) == 60
    assert info["test"]["size"] == 30 and len(info["train"]["ids_sha256"]) == 64
    train = open_split(layout.data, "train", params.data)
    assert isinstance(train, StreamSplit) and len(train) == 60

    side_info_stage(params, layout)
    for version in params.versions:
        version_stage(params, layout, version)
    for name in params.transformations:
        transformation_stage(params, layout, name)
    report = evaluate_stage(params, layout)

    v2 = load_file(str(layout.version_embeddings(2)))
    assert v2["train"].shape == (60, 8) and v2["test"].shape == (30, 8)
    assert torch.isfinite(v2["test"]).all()
    side = load_file(str(layout.side_info_embeddings))
    assert side["train"].shape == (60, 8)
    assert (layout.transformation("v1_to_v2_aug") / "model.safetensors").exists()
    assert json.loads((layout.evaluation / "metrics.json").read_text()) == report
    assert report  # every case scored on the 30 streamed test images


def test_bad_image_is_skipped_and_left_out_of_training(trees, tmp_path):
    (trees[0] / "class-1" / "broken.png").write_bytes(b"\x89PNG not really")
    raw = stream_params(str(trees[0]), str(trees[1]), on_bad_image="skip")
    params = parse_params(raw)
    layout = Layout(tmp_path / "outputs")
    info = prepare_stage(params, layout)
    skipped = json.loads((layout.data / "skipped.json").read_text())
    assert [s["id"] for s in skipped["train"]] == ["class-1/broken.png"]
    assert info["train"]["size"] == 60 and info["train"]["skipped"] == 1
    train = open_split(layout.data, "train", params.data)
    assert len(train) == 60  # the broken file is not among the items training draws from
    assert all(not item.id.endswith("broken.png") for item in train.dataset.items)


def test_bad_image_fails_prepare_and_leaves_nothing(trees, tmp_path):
    (trees[0] / "class-1" / "broken.png").write_bytes(b"\x89PNG not really")
    params = parse_params(stream_params(str(trees[0]), str(trees[1])))
    layout = Layout(tmp_path / "outputs")
    with pytest.raises(DataError, match=r"broken\.png"):
        prepare_stage(params, layout)
    assert not layout.data.exists()


def test_changed_collection_after_prepare_is_refused(trees, tmp_path):
    params = parse_params(stream_params(str(trees[0]), str(trees[1])))
    layout = Layout(tmp_path / "outputs")
    prepare_stage(params, layout)
    first = sorted((trees[0] / "class-0").iterdir())[0]
    first.rename(first.with_name("renamed.png"))
    with pytest.raises(DataError, match="rerun the prepare stage"):
        open_split(layout.data, "train", params.data)
    assert load_info(layout.data)["train"]["size"] == 60
