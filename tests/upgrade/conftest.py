"""Fixtures for galleries and upgrades: ONNX chains, synthetic galleries, S3, a registry.

Everything is tiny (8-d embeddings, 16-wide transformations) so the whole tree runs in seconds;
the registry fixture (real MLflow SQLite store, models logged with the fct flavor) is built once
per session.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fct_registry.gallery import GalleryWriter, Manifest, make_batch, open_storage
from tests.support import services
from tests.support.services import moto_s3  # noqa: F401  (session fixture: moto_server on loopback)

FAMILY = "tiny"
SIDE = "tiny-side-info/1"
OLD_DIM, SIDE_DIM, NEW_DIM, HIDDEN = 8, 4, 6, 16


# --- ONNX chains -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxChain:
    path: Path
    module: object  # the torch TransformationChain it was exported from

    def torch(self, old: np.ndarray, side: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.tensor(old), torch.tensor(side)).numpy()


def export_chain(
    path: Path, old_dim: int, new_dim: int, side_dim: int, seed: int, kind: str = "fct"
) -> OnnxChain:
    import torch

    from fct_registry.models.transformations import TRANSFORMATIONS, TransformationChain
    from fct_registry.registry.onnx_export import export_onnx

    torch.manual_seed(seed)
    hop = TRANSFORMATIONS.build(
        kind, old_dim=old_dim, new_dim=new_dim, side_info_dim=side_dim, hidden_dim=HIDDEN
    )
    for m in hop.modules():  # non-trivial batch-norm statistics, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    chain = TransformationChain([hop]).eval()
    export_onnx(chain, path, old_dim=old_dim, side_info_dim=side_dim if kind == "fct" else 0)
    return OnnxChain(path, chain)


@pytest.fixture(scope="session")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OnnxChain]:
    """``1-2``: 8+4 -> 6; ``2-2b``: 6+4 -> 6 (a second hop); ``3-2``: 6 -> 6 without side-info."""
    root = tmp_path_factory.mktemp("onnx")
    return {
        "1-2": export_chain(root / "1-2.onnx", OLD_DIM, NEW_DIM, SIDE_DIM, seed=1),
        "2-2b": export_chain(root / "2-2b.onnx", NEW_DIM, NEW_DIM, SIDE_DIM, seed=2),
        "3-2": export_chain(
            root / "3-2.onnx", NEW_DIM, NEW_DIM, SIDE_DIM, seed=3, kind="fct-no-side-info"
        ),
    }


# --- galleries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    ids: list[str]
    old: np.ndarray
    side: np.ndarray
    labels: np.ndarray


def synthetic_rows(n: int, dim: int = OLD_DIM, seed: int = 0, prefix: str = "item") -> Rows:
    rng = np.random.default_rng(seed)
    return Rows(
        [f"{prefix}-{i:05d}" for i in range(n)],
        rng.standard_normal((n, dim), dtype=np.float32),
        rng.standard_normal((n, SIDE_DIM), dtype=np.float32),
        rng.integers(0, 5, n),
    )


def write_gallery(
    location: str | Path,
    rows: Rows,
    *,
    version: int = 1,
    side_info: str | None = SIDE,
    shard_rows: int = 100,
    row_group_rows: int = 64,
) -> Manifest:
    writer = GalleryWriter(
        open_storage(location), FAMILY, shard_rows=shard_rows, row_group_rows=row_group_rows
    )
    writer.write(
        make_batch(
            rows.ids,
            rows.old,
            model_version=version,
            side_info=rows.side,
            side_info_version=side_info,
            labels=rows.labels,
        )
    )
    return writer.close()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (what byte-identical comparisons compare)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- S3 (moto_server from tests/support/services.py) ---


@pytest.fixture(scope="session")
def moto_endpoint(moto_s3: services.S3) -> str:  # noqa: F811  (uses the imported fixture)
    return moto_s3.endpoint


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    client: object

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


S3_ENV = services.AWS_ENV


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the session's moto_server, with AWS_ENDPOINT_URL and dummy credentials
    set for boto3."""
    import boto3

    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    bucket = f"fct-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket=bucket)
    return S3(moto_endpoint, bucket, client)


# --- a registered family -----------------------------------------------------------------------


@dataclass(frozen=True)
class TinyRegistry:
    """Family ``tiny``: v1 (8-d) and v2 (6-d) smallcnn models, side-info extractor 1 (4-d), and
    transformation 1 (v1 -> v2, reading side-info 1); images are random 1x28x28."""

    uri: str
    root: Path
    images: Path  # safetensors with images + labels
    transformation: object  # torch module of tiny-transformations/1
    models: dict[str, object]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_REGISTRY_URI": self.uri,
            "OMP_WAIT_POLICY": "PASSIVE",
        }


def _image_spec(kind: str, dim: int) -> dict:
    spec = {
        "kind": kind,
        "backbone": "smallcnn",
        "backbone_kwargs": {"width": 4},
        "in_channels": 1,
        "input_shape": [1, 28, 28],
        "mean": [0.3],
        "std": [0.3],
    }
    if kind == "embedding":
        return spec | {"embedding_dim": dim, "num_classes": 5}
    return spec | {"dim": dim, "projection_dim": 4}


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRegistry]:
    import mlflow

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # The store is MLflow's default only while it is built: a session-wide $MLFLOW_*_URI would
    # leak into every later test (the `registry` fixture sets it per test).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.setenv("MLFLOW_REGISTRY_URI", uri)
        try:
            transformation, models = _build_tiny_registry(root, uri)
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
    yield TinyRegistry(uri, root, root / "images.safetensors", transformation, models)


def _build_tiny_registry(root: Path, uri: str) -> tuple[object, dict[str, object]]:
    import mlflow
    import torch
    from safetensors.torch import save_file

    from fct_registry.models.io import build_from_spec
    from fct_registry.registry import flavor
    from fct_registry.registry import tags as fct_tags

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment(
            "fct-tiny", artifact_location=(root / "artifacts").as_uri()
        )
    )
    torch.manual_seed(0)
    models: dict[str, object] = {}

    def log(name: str, module: object, spec: dict, tags: dict[str, str]) -> None:
        with mlflow.start_run():
            flavor.log_model(module, "model", spec=spec, registered_model_name=name, tags=tags)

    side_spec = _image_spec("side_info", SIDE_DIM)
    models["side"] = build_from_spec(side_spec).eval()
    log(
        fct_tags.side_info_model_name(FAMILY),
        models["side"],
        side_spec,
        {
            fct_tags.ROLE: fct_tags.ROLE_SIDE_INFO,
            fct_tags.FAMILY: FAMILY,
            fct_tags.EMBEDDING_DIM: str(SIDE_DIM),
        },
    )
    for version, dim in ((1, OLD_DIM), (2, NEW_DIM)):
        spec = _image_spec("embedding", dim)
        models[f"v{version}"] = build_from_spec(spec).eval()
        log(
            FAMILY,
            models[f"v{version}"],
            spec,
            {
                fct_tags.ROLE: fct_tags.ROLE_EMBEDDING,
                fct_tags.FAMILY: FAMILY,
                fct_tags.EMBEDDING_DIM: str(dim),
                fct_tags.SIDE_INFO: SIDE,
            },
        )
    t_spec = {
        "kind": "transformation",
        "type": "fct",
        "old_dim": OLD_DIM,
        "new_dim": NEW_DIM,
        "side_info_dim": SIDE_DIM,
        "hidden_dim": HIDDEN,
    }
    transformation = build_from_spec(t_spec).eval()
    log(
        fct_tags.transformations_model_name(FAMILY),
        transformation,
        t_spec,
        {
            fct_tags.ROLE: fct_tags.ROLE_TRANSFORMATION,
            fct_tags.FAMILY: FAMILY,
            fct_tags.SOURCE: "1",
            fct_tags.TARGET: "2",
            fct_tags.SIDE_INFO: SIDE,
            fct_tags.SIDE_INFO_DIM: str(SIDE_DIM),
            fct_tags.KIND: "fct",
            fct_tags.TOP1: "50.0",
            fct_tags.MEASURED_RUN: "test-measurement",
        },
    )

    gen = torch.Generator().manual_seed(0)
    images = root / "images.safetensors"
    save_file(
        {
            "images": torch.randint(0, 256, (240, 1, 28, 28), dtype=torch.uint8, generator=gen),
            "labels": torch.randint(0, 5, (240,), generator=gen),
        },
        str(images),
    )
    return transformation, models


@pytest.fixture
def registry(tiny_registry: TinyRegistry, monkeypatch: pytest.MonkeyPatch) -> TinyRegistry:
    """The session's registry as MLflow's default for this test (other tests may reset it)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_registry.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", tiny_registry.uri)
    mlflow.set_tracking_uri(tiny_registry.uri)
    mlflow.set_registry_uri(tiny_registry.uri)
    return tiny_registry


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
