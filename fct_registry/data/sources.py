"""Dataset sources, each a named builder returning uint8 images ``[N, C, H, W]`` and labels.

Nothing here downloads: CIFAR-100 and ImageFolder trees must already be on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fct_registry._registry import Registry
from fct_registry.data.fashion_mnist import load_fashion_mnist
from fct_registry.errors import DataError


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DataError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")


DATASETS: Registry = Registry("dataset")

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _require_dir(root: Path, hint: str) -> None:
    if not root.is_dir():
        raise DataError(f"dataset path {root} does not exist; {hint}")


@DATASETS.register("fashion-mnist")
def fashion_mnist(root: Path, split: str, image_size: int | None = None) -> Split:
    _require_dir(
        root,
        "install it with `apt-get install dataset-fashion-mnist` (or `make setup`)"
        " or set data.root in params.yaml",
    )
    images, labels = load_fashion_mnist(root, split)
    return Split(images, labels, FASHION_CLASSES)


@DATASETS.register("cifar100")
def cifar100(root: Path, split: str, image_size: int | None = None) -> Split:
    from torchvision.datasets import CIFAR100

    _require_dir(root, "point data.root at the folder holding `cifar-100-python/`")
    try:
        ds = CIFAR100(str(root), train=split == "train", download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise DataError(
            f"CIFAR-100 not found under {root} ({exc}); extract "
            "cifar-100-python.tar.gz there (nothing is downloaded)"
        ) from None
    images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))
    return Split(images, np.asarray(ds.targets, dtype=np.int64), tuple(ds.classes))


@DATASETS.register("imagefolder")
def imagefolder(root: Path, split: str, image_size: int | None = None) -> Split:
    """``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg``, resized to ``image_size``."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    folder = root / split
    _require_dir(
        folder,
        f"an ImageFolder dataset needs {root}/train/<class>/ and "
        f"{root}/test/<class>/ folders of images",
    )
    if image_size is None:
        raise DataError("data.image_size is required for imagefolder datasets (e.g. 64)")
    ds = ImageFolder(str(folder))
    if not ds.samples:
        raise DataError(f"no images found under {folder}")
    images = np.empty((len(ds.samples), 3, image_size, image_size), dtype=np.uint8)
    for i, (path, _) in enumerate(ds.samples):
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
        images[i] = np.asarray(rgb).transpose(2, 0, 1)
    return Split(images, np.asarray(ds.targets, dtype=np.int64), tuple(ds.classes))


def load_split(
    dataset: str, root: Path, split: str, image_size: int | None = None, limit: int | None = None
) -> Split:
    data = DATASETS.build(dataset, root=Path(root), split=split, image_size=image_size)
    if limit is not None:
        data = Split(data.images[:limit], data.labels[:limit], data.classes)
    return data
