"""External model versions end to end: `dvc repro` with version 1 an MLflow pytorch model and
version 2 an ONNX file, then `fct embed` with version 1 and `fct upgrade` to version 2.

Version 1 is a small torch model the test logs into the project's MLflow store with
``mlflow.pytorch.log_model`` (its preprocessing recorded as MLmodel metadata); version 2 is an
ONNX file beside params.yaml (preprocessing in params); the side-info extractor is trained here.
Every row the tool writes is checked against running the external models directly.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, needs_fashion, tiny_params
from tests.support.external_models import MEAN, PREPROCESS, STD, project_env, tiny_net

pytestmark = [pytest.mark.slow, needs_fashion]

FAMILY = "byom"
# Version 2 reads a 24x24 centre crop of the 28x28 images: `fct embed` must apply the recorded
# resize (28, then crop), not its default (shrink to 24).
PREPROCESS_V2 = {**PREPROCESS, "crop": 24}


def _run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=cwd,
        env=project_env(cwd),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _params() -> dict:
    p = tiny_params()
    p["family"] = FAMILY
    p["device"] = "cpu"
    p["versions"] = {
        "1": {"source": {"mlflow": {"uri": "models:/prod-embedder/1"}}, "embedding_dim": 8},
        "2": {
            "source": {"onnx": {"path": "external/v2.onnx"}},
            "embedding_dim": 16,
            "preprocess": PREPROCESS_V2,
        },
    }
    p["transformations"] = {
        "v1_to_v2": {
            "from": 1,
            "to": 2,
            "kind": "fct",
            "hidden_dim": 32,
            "optim": {"epochs": 2, "batch_size": 64, "max_batches": 3},
        }
    }
    p["bct"] = {}
    p["backfill"] = {"enabled": False, "from": 1, "to": 2}  # it needs a trained classifier
    p["evaluation"] = {"bootstrap_resamples": 100}
    return p


def _log_version_1(work: Path) -> None:
    """The external team's model, in the project's store, with its preprocessing recorded."""
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    mlflow.set_experiment("prod-embedder")
    example = np.random.default_rng(0).random((4, 1, 28, 28), np.float32)
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            tiny_net(8, 1),
            name="embedder",
            input_example=example,
            registered_model_name="prod-embedder",
            metadata={"preprocess": PREPROCESS},
        )
    mlflow.set_tracking_uri(None)


def _write_version_2(path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        tiny_net(16, 2),
        (torch.rand(4, 1, 24, 24),),
        dynamo=True,
        input_names=["pixels"],
        output_names=["features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    program.save(str(path))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("external")
    for item in ("dvc.yaml", ".dvcignore", "pipelines", "fct_registry", "scripts/stage_deps.py"):
        src = ROOT / item
        (work / item).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    (work / "params.yaml").write_text(yaml.safe_dump(_params()))
    _log_version_1(work)
    _write_version_2(work / "external" / "v2.onnx")
    # As a user does after naming a model file in params: it becomes a dep of its stage.
    deps = subprocess.run(
        [sys.executable, "scripts/stage_deps.py", "--write", "--model-files"],
        cwd=work,
        env=project_env(work),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deps.returncode == 0, deps.stdout + deps.stderr
    assert (
        "external/v2.onnx"
        in yaml.safe_load((work / "dvc.yaml").read_text())["stages"]["train"]["do"]["deps"]
    )
    assert _run(work, "dvc", "init", "--no-scm", "-q").returncode == 0
    run = _run(work, "dvc", "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return work


def _direct(images: np.ndarray, version: int, work: Path) -> np.ndarray:
    """The external model run directly: torch for version 1, onnxruntime for version 2."""
    import onnxruntime as ort
    import torch

    x = (images.astype(np.float32) / 255 - MEAN[0]) / STD[0]
    if version == 1:
        with torch.no_grad():
            return tiny_net(8, 1)(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(work / "external" / "v2.onnx"))
    return session.run(None, {"pixels": np.ascontiguousarray(x[:, :, 2:26, 2:26])})[0]


def _rows(gallery: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(gallery.rglob("*.parquet")))
    ids = table.column("id").to_pylist()
    order = np.argsort([int(re.findall(r"\d+", i)[-1]) for i in ids])
    out = {"id": np.asarray(ids)[order]}
    for column in ("embedding", "side_info"):
        if column in table.column_names:
            out[column] = np.asarray(table.column(column).to_pylist(), np.float32)[order]
    return out


def test_repro_registers_external_versions_with_lineage(project: Path) -> None:
    from mlflow import MlflowClient

    summary = json.loads((project / "outputs" / "registry.json").read_text())
    assert summary["family"] == FAMILY
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    v2_sha = hashlib.sha256((project / "external" / "v2.onnx").read_bytes()).hexdigest()
    for version, kind, uri in (
        (1, "mlflow", "models:/prod-embedder/1"),
        (2, "onnx", "external/v2.onnx"),
    ):
        tags = client.get_model_version(FAMILY, str(version)).tags
        source = json.loads(tags["fct.source"])
        assert source["kind"] == kind and source["uri"] == uri
        assert len(source["sha256"]) == 64
        assert json.loads(tags["fct.preprocess"]) == (PREPROCESS if version == 1 else PREPROCESS_V2)
        assert tags["fct.embedding_dim"] == ("8" if version == 1 else "16")
        assert tags["fct.side_info"].startswith(f"{FAMILY}-side-info/")
    assert json.loads(client.get_model_version(FAMILY, "2").tags["fct.source"])["sha256"] == v2_sha
    # The stage's stored test embeddings are the external models' own outputs.
    from safetensors.numpy import load_file

    images = load_file(str(project / "outputs/data/test.safetensors"))["images"]
    for version in (1, 2):
        stored = load_file(str(project / f"outputs/embeddings/v{version}.safetensors"))["test"]
        np.testing.assert_allclose(stored, _direct(images, version, project), atol=1e-5)
    assert (project / "outputs" / "gate").is_dir()


def _embed(project: Path, version: int, out: Path, *images: str) -> None:
    source = ["--images", *images] if images else ["--split", "test"]
    embedded = _run(
        project,
        "fct_registry",
        "embed",
        "--model",
        f"{FAMILY}@{version}",
        *source,
        "--out",
        str(out),
        "--no-progress",
        "--workers",
        "0",
    )
    assert embedded.returncode == 0, embedded.stderr[-3000:]


def test_embed_applies_the_recorded_preprocessing(project: Path, tmp_path: Path) -> None:
    """Image files through `fct embed` with version 2: the recorded resize (28, then the 24
    crop), where the default without a record would shrink the images to 24."""
    from PIL import Image
    from safetensors.numpy import load_file

    images = load_file(str(project / "outputs/data/test.safetensors"))["images"][:40]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"img-{i:04d}.png")
    _embed(project, 2, tmp_path / "g2", str(folder))
    np.testing.assert_allclose(
        _rows(tmp_path / "g2")["embedding"], _direct(images, 2, project), atol=1e-5
    )


def test_embed_with_version_1_then_upgrade_to_version_2(project: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from fct_registry.registry.flavor import load_model

    _embed(project, 1, tmp_path / "g1")
    upgraded = _run(
        project,
        "fct_registry",
        "upgrade",
        "--gallery",
        str(tmp_path / "g1"),
        "--to",
        f"{FAMILY}@2",
        "--out",
        str(tmp_path / "g2"),
    )
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]

    images = load_file(str(project / "outputs/data/test.safetensors"))["images"]
    g1 = _rows(tmp_path / "g1")
    v1 = _direct(images, 1, project)
    np.testing.assert_allclose(g1["embedding"], v1, atol=1e-5)
    # The upgrade: the registered transformation applied to version 1's direct outputs.
    import mlflow
    import torch

    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    try:
        hop = load_model(f"models:/{FAMILY}-transformations/1")
    finally:
        mlflow.set_tracking_uri(None)
    with torch.no_grad():
        want = hop(torch.from_numpy(v1), torch.from_numpy(g1["side_info"])).numpy()
    g2 = _rows(tmp_path / "g2")
    assert list(g2["id"]) == list(g1["id"])
    np.testing.assert_allclose(g2["embedding"], want, atol=1e-5)
    assert g2["embedding"].shape == (len(images), 16)
