"""A tiny upgraded gallery with an uncertainty column, its images, and the new model; S3 on the
session's moto_server for the image-source tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import save_file

from fct_registry.gallery import GalleryWriter, make_batch, open_storage
from fct_registry.gallery import schema as gallery_schema
from fct_registry.models.embedding import EmbeddingModel
from fct_registry.models.io import save_model
from fct_registry.training.embed import embed_images
from tests.upgrade.conftest import moto_endpoint, moto_s3, s3  # noqa: F401  (pytest fixtures)

N, DIM, SIDE = 40, 6, 4


@dataclass(frozen=True)
class Setup:
    gallery: Path
    images: Path
    model: Path
    ids: list[str]
    uncertainty: np.ndarray
    embeddings: np.ndarray  # stored (transformed) embeddings
    new: np.ndarray  # the new model on every image

    def embed(self, images: torch.Tensor) -> np.ndarray:
        from fct_registry.models.io import load_model

        module, _ = load_model(self.model)
        return embed_images(module, images, torch.device("cpu")).numpy()


def write_gallery(root: Path, ids, emb, side, labels, unc, shard_rows=16, uris=None) -> None:
    writer = GalleryWriter(open_storage(root), "tiny", shard_rows=shard_rows, row_group_rows=8)
    batch = make_batch(
        ids, emb, model_version=3, side_info=side, side_info_version="s/1", labels=labels,
        source_uris=uris,
    )  # fmt: skip
    if unc is not None:
        batch = batch.append_column(
            gallery_schema.uncertainty_field(), pa.array(unc, pa.float32(), mask=np.isnan(unc))
        )
    writer.write(batch)
    writer.close()


@pytest.fixture
def setup(tmp_path) -> Setup:
    gen = np.random.default_rng(0)
    images = torch.from_numpy(gen.integers(0, 256, (N, 1, 28, 28), dtype=np.uint8))
    labels = torch.from_numpy(gen.integers(0, 3, N))
    save_file({"images": images, "labels": labels}, str(tmp_path / "imgs.safetensors"))
    torch.manual_seed(0)
    model = EmbeddingModel("smallcnn", {"width": 4}, 1, DIM, 3, [0.5], [0.5]).eval()
    spec = {
        "kind": "embedding",
        "backbone": "smallcnn",
        "backbone_kwargs": {"width": 4},
        "in_channels": 1,
        "embedding_dim": DIM,
        "num_classes": 3,
        "mean": [0.5],
        "std": [0.5],
    }
    save_model(model, spec, tmp_path / "v3")
    ids = [f"imgs-{i:07d}" for i in range(N)]
    new = embed_images(model, images, torch.device("cpu")).numpy()
    emb = (new + gen.normal(0, 0.5, new.shape)).astype(np.float32)
    unc = gen.normal(0, 1, N).astype(np.float32)
    unc[[3, 17]] = np.nan  # rows embedded by the model itself: not candidates
    side = gen.normal(0, 1, (N, SIDE)).astype(np.float32)
    write_gallery(tmp_path / "g", ids, emb, side, labels.numpy(), unc)
    return Setup(tmp_path / "g", tmp_path / "imgs.safetensors", tmp_path / "v3", ids, unc, emb, new)
