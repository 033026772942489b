"""Reader for the IDX files of Fashion-MNIST as shipped by Debian's ``dataset-fashion-mnist``."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from fct_registry.errors import DataError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open_idx(root: Path, stem: str) -> bytes:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.exists():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as fh:
                return fh.read()
    raise DataError(
        f"Fashion-MNIST file {stem}(.gz) not found under {root}; install it with "
        "`apt-get install dataset-fashion-mnist` (or `make setup`) or set data.root in params.yaml"
    )


def _parse_idx(raw: bytes, stem: str) -> np.ndarray:
    if len(raw) < 8:
        raise DataError(f"{stem} is truncated ({len(raw)} bytes); reinstall dataset-fashion-mnist")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{stem} is not an unsigned-byte IDX file; reinstall dataset-fashion-mnist")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{stem} holds {data.size} values, header says {shape}; file is corrupt")
    return data.reshape(shape)


def load_fashion_mnist(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 [N, 1, 28, 28], labels int64 [N])`` for ``split`` in train/test."""
    image_stem, label_stem = _FILES[split]
    images = _parse_idx(_open_idx(root, image_stem), image_stem)
    labels = _parse_idx(_open_idx(root, label_stem), label_stem)
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels in {root} ({split})")
    return images[:, None].copy(), labels.astype(np.int64)
