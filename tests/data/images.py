"""Image trees made from Fashion-MNIST for the source tests (nothing downloads).

Real Fashion-MNIST images (Debian's dataset-fashion-mnist) when installed, else seeded noise of
the same shape, exported as PNG/JPEG files, with RGB copies.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tests.conftest import FASHION


def fashion_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [n, 28, 28], int64 labels [n])``: the first ``n`` test images."""
    if (FASHION / "t10k-images-idx3-ubyte.gz").exists():
        from fct_registry.data.fashion_mnist import load_fashion_mnist

        images, labels = load_fashion_mnist(FASHION, "test")
        return images[:n, 0], labels[:n]
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def encode(image: np.ndarray, fmt: str = "PNG", *, rgb: bool = False, quality: int = 95) -> bytes:
    from PIL import Image

    img = Image.fromarray(image, "L")
    if rgb:
        img = img.convert("RGB")
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def write_imagefolder(
    root: Path, n: int = 60, *, fmt: str = "PNG", rgb: bool = False, classes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """``root/class-<k>/img-<i>.<ext>`` for the first ``n`` images whose label < ``classes``;
    returns the images and labels in listing order."""
    images, labels = fashion_images(max(n * 10 // classes + 50, n))
    keep = np.flatnonzero(labels < classes)[:n]
    ext = "png" if fmt == "PNG" else "jpg"
    order = []
    for i in keep:
        folder = root / f"class-{labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img-{i:05d}.{ext}").write_bytes(encode(images[i], fmt, rgb=rgb))
        order.append((labels[i], i))
    order.sort()
    idx = np.array([i for _, i in order])
    return images[idx], labels[idx]


def write_flat(root: Path, n: int = 40, *, fmt: str = "PNG", rgb: bool = False) -> np.ndarray:
    images, _ = fashion_images(n)
    root.mkdir(parents=True, exist_ok=True)
    ext = "png" if fmt == "PNG" else "jpg"
    for i in range(n):
        (root / f"{i:05d}.{ext}").write_bytes(encode(images[i], fmt, rgb=rgb))
    return images
