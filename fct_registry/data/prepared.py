"""The prepared dataset: one safetensors file per split, the uniform input of every stage."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fct_registry.config import DataConfig
from fct_registry.data.sources import Split, load_split
from fct_registry.errors import DataError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class TensorSplit:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def subset(self, classes: list[int] | None) -> TensorSplit:
        if classes is None:
            return self
        keep = torch.isin(self.labels, torch.as_tensor(classes))
        return TensorSplit(self.images[keep], self.labels[keep])

    def to(self, device: torch.device) -> TensorSplit:
        return TensorSplit(self.images.to(device), self.labels.to(device))


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of uint8 images in [0, 1] units, for the models' input normalisation."""
    x = images.astype(np.float32) / 255.0
    return x.mean(axis=(0, 2, 3)).tolist(), x.std(axis=(0, 2, 3)).tolist()


def prepare(config: DataConfig, out_dir: Path) -> dict:
    """Materialise both splits as safetensors plus ``info.json`` (classes, sizes, stats).

    Written to a temporary folder renamed into place at the end: a failure leaves nothing behind.
    """
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info: dict = {"dataset": config.dataset}
    for split in SPLITS:
        limit = config.max_train if split == "train" else config.max_test
        data: Split = load_split(config.dataset, config.root, split, config.image_size, limit)
        save_file(
            {"images": torch.from_numpy(data.images), "labels": torch.from_numpy(data.labels)},
            str(tmp / f"{split}.safetensors"),
        )
        info[split] = {"size": len(data.labels), "per_class": np.bincount(data.labels).tolist()}
        if split == "train":
            info["classes"] = list(data.classes)
            info["shape"] = list(data.images.shape[1:])
            info["mean"], info["std"] = channel_stats(data.images)
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return info


def load_prepared(data_dir: Path, split: str) -> TensorSplit:
    path = Path(data_dir) / f"{split}.safetensors"
    if not path.exists():
        raise DataError(f"{path} not found; run the prepare stage first (`dvc repro prepare`)")
    tensors = load_file(str(path))
    if "labels" not in tensors:  # a family given as embedding tables without a label column
        raise DataError(
            f"{path} has no labels: the family's embedding tables have no `label` column; add "
            "one to the tables (evaluation and the gate score retrieval by label)"
        )
    return TensorSplit(tensors["images"], tensors["labels"])


def load_info(data_dir: Path) -> dict:
    path = Path(data_dir) / "info.json"
    if not path.exists():
        raise DataError(f"{path} not found; run the prepare stage first (`dvc repro prepare`)")
    return json.loads(path.read_text())
