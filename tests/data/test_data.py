import gzip
import struct

import numpy as np
import pytest
import torch

from fct_registry.config import DataConfig
from fct_registry.data.augment import classifier_augment, random_affine, simclr_augment
from fct_registry.data.fashion_mnist import load_fashion_mnist
from fct_registry.data.prepared import load_prepared, prepare
from fct_registry.data.sources import load_split
from fct_registry.errors import DataError
from tests.conftest import needs_fashion


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(root, n_train=20, n_test=10):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_idx_reader_roundtrip(tmp_path):
    _fake_fashion(tmp_path)
    images, labels = load_fashion_mnist(tmp_path, "train")
    assert images.shape == (20, 1, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]


def test_truncated_idx_file(tmp_path):
    _fake_fashion(tmp_path)
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="corrupt"):
        load_fashion_mnist(tmp_path, "train")


def test_missing_dataset_path_names_fix(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_split("fashion-mnist", tmp_path / "missing", "train")


def test_prepare_writes_splits_and_stats(tmp_path):
    _fake_fashion(tmp_path / "src")
    info = prepare(DataConfig(root=tmp_path / "src", max_train=12), tmp_path / "out")
    assert info["train"]["size"] == 12 and info["test"]["size"] == 10
    assert info["shape"] == [1, 28, 28] and len(info["classes"]) == 10
    train = load_prepared(tmp_path / "out", "train")
    assert train.images.dtype == torch.uint8 and train.labels.tolist()[:3] == [0, 1, 2]
    assert set(train.subset([1, 2]).labels.tolist()) == {1, 2}


def test_imagefolder_source(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (i * 50, 20, 200)).save(folder / f"{i}.png")
    data = load_split("imagefolder", tmp_path, "train", image_size=16)
    assert data.images.shape == (4, 3, 16, 16) and data.classes == ("cat", "dog")
    with pytest.raises(DataError, match="image_size is required"):
        load_split("imagefolder", tmp_path, "train")


def test_cifar100_missing_is_clear(tmp_path):
    with pytest.raises(DataError, match="nothing is downloaded"):
        load_split("cifar100", tmp_path, "train")


def test_augmentations_are_per_sample_and_seeded():
    x = torch.rand(8, 1, 28, 28)
    a = simclr_augment(x, torch.Generator().manual_seed(1))
    b = simclr_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1
    # Same image, different random view per sample.
    same = x[:1].expand(4, -1, -1, -1)
    views = classifier_augment(same, torch.Generator().manual_seed(2))
    assert not torch.allclose(views[0], views[1])


def test_identity_affine_keeps_image():
    x = torch.rand(3, 1, 28, 28)
    out = random_affine(x, torch.Generator().manual_seed(0), scale=(1, 1), max_shift=0, flip=False)
    assert torch.allclose(out, x, atol=1e-5)


@needs_fashion
def test_real_fashion_mnist_shapes():
    data = load_split("fashion-mnist", "/usr/share/datasets/fashion-mnist", "test")
    assert data.images.shape == (10000, 1, 28, 28)
    assert np.bincount(data.labels).tolist() == [1000] * 10
