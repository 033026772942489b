"""Image sources record the class names their labels index (``describe()["classes"]``, which
``fct embed`` writes into the gallery's manifest): ImageFolder folders, and the class list the
prepare stage writes beside a prepared split (``info.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fct_registry.data.image_sources import open_source
from fct_registry.data.sources import FASHION_CLASSES
from tests.data.images import write_imagefolder


def _split(folder: Path, labels: list[int], info: object | None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    images = torch.zeros((len(labels), 1, 4, 4), dtype=torch.uint8)
    save_file({"images": images, "labels": torch.tensor(labels)}, str(folder / "test.safetensors"))
    if info is not None:
        (folder / "info.json").write_text(json.dumps(info))
    return str(folder / "test.safetensors")


def test_imagefolder_records_its_folders(tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "tree", 12, classes=3)
    source = open_source(str(tmp_path / "tree"))
    assert source.describe()["classes"] == ["class-0", "class-1", "class-2"]


def test_a_prepared_split_records_the_prepare_stages_class_names(tmp_path: Path) -> None:
    info = {"dataset": "fashion_mnist", "classes": list(FASHION_CLASSES)}
    source = open_source(_split(tmp_path / "data", [0, 9, 3], info))
    assert source.classes == FASHION_CLASSES
    assert source.describe()["classes"] == list(FASHION_CLASSES)


@pytest.mark.parametrize(
    "info",
    [
        None,  # no info.json: bare ids, as before
        {"classes": ["a", "b"]},  # names fewer than the labels: not this split's list
        {"classes": "a,b"},
        ["a", "b"],
    ],
)
def test_without_a_matching_class_list_labels_stay_ids(tmp_path: Path, info: object) -> None:
    source = open_source(_split(tmp_path / "data", [0, 9, 3], info))
    assert source.classes is None and "classes" not in source.describe()
