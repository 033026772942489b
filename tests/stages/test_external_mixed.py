"""A family that mixes external and trained models, end to end under `dvc repro`.

The side-info extractor is a TorchScript file, version 1 an ONNX file (both beside params.yaml),
version 2 is trained by the pipeline (tiny epochs). `scripts/stage_deps.py --write
--model-files` makes the model files DVC deps of the stages that run them; `dvc repro` then
embeds, trains, registers (lineage tag ``fct.source`` on the external models only) and gates;
`fct embed` with version 1 and `fct upgrade` to version 2 work; replacing a model file makes
`dvc status` show the stages that run it as changed.
"""

from __future__ import annotations

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


def e2e(test):
    """The `dvc repro` tests: slow, and they need Fashion-MNIST."""
    return pytest.mark.slow(needs_fashion(test))


FAMILY = "mixed"
V1_FILE, SIDE_FILE = "external/v1.onnx", "external/side.pt"


def _run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
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
    p["side_info"] = {
        "source": {"torchscript": {"path": SIDE_FILE}},
        "dim": 12,
        "preprocess": PREPROCESS,
    }
    trained = p["versions"]["2"]
    trained["embedding_dim"] = 16
    p["versions"] = {
        "1": {"source": {"onnx": {"path": V1_FILE}}, "embedding_dim": 8, "preprocess": PREPROCESS},
        "2": trained,
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
    p["backfill"] = {"enabled": False, "from": 1, "to": 2}
    p["evaluation"] = {"bootstrap_resamples": 100}
    return p


def _write_v1(path: Path, seed: int = 1) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        tiny_net(8, seed),
        (torch.rand(4, 1, 28, 28),),
        dynamo=True,
        input_names=["pixels"],
        output_names=["features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    program.save(str(path))


def _write_side(path: Path, seed: int = 3) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.trace(tiny_net(12, seed), torch.rand(2, 1, 28, 28)), str(path))


def _copy(work: Path, *items: str) -> None:
    for item in items:
        src, dst = ROOT / item, work / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("mixed")
    _copy(work, "dvc.yaml", ".dvcignore", "pipelines", "fct_registry", "scripts/stage_deps.py")
    (work / "params.yaml").write_text(yaml.safe_dump(_params()))
    _write_v1(work / V1_FILE)
    _write_side(work / SIDE_FILE)
    deps = _run(work, "scripts/stage_deps.py", "--write", "--model-files")
    assert deps.returncode == 0, deps.stdout + deps.stderr
    assert _run(work, "-m", "dvc", "init", "--no-scm", "-q").returncode == 0
    run = _run(work, "-m", "dvc", "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return work


def _direct(images: np.ndarray, work: Path, which: str) -> np.ndarray:
    """An external model run directly: onnxruntime for version 1, torch for the side-info."""
    import onnxruntime as ort
    import torch

    x = (images.astype(np.float32) / 255 - MEAN[0]) / STD[0]
    if which == "side_info":
        with torch.no_grad():
            return torch.jit.load(str(work / SIDE_FILE))(torch.from_numpy(x)).numpy()
    return ort.InferenceSession(str(work / V1_FILE)).run(None, {"pixels": x})[0]


@e2e
def test_dvc_yaml_lists_the_model_files(project: Path) -> None:
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert SIDE_FILE in stages["side_info"]["deps"]
    assert V1_FILE in stages["train"]["do"]["deps"]
    # An external extractor trains on no version's images: the entry DVC cannot parse is gone.
    assert not any("trained_with" in p for p in stages["side_info"]["params"])


@e2e
def test_repro_embeds_with_the_external_models_and_tags_only_them(project: Path) -> None:
    from mlflow import MlflowClient
    from safetensors.numpy import load_file

    images = load_file(str(project / "outputs/data/test.safetensors"))["images"]
    stored_v1 = load_file(str(project / "outputs/embeddings/v1.safetensors"))["test"]
    stored_side = load_file(str(project / "outputs/embeddings/side_info.safetensors"))["test"]
    np.testing.assert_allclose(stored_v1, _direct(images, project, "v1"), atol=1e-5)
    np.testing.assert_allclose(stored_side, _direct(images, project, "side_info"), atol=1e-5)
    assert load_file(str(project / "outputs/embeddings/v2.safetensors"))["test"].shape[1] == 16

    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    v1 = client.get_model_version(FAMILY, "1").tags
    v2 = client.get_model_version(FAMILY, "2").tags
    assert json.loads(v1["fct.source"])["kind"] == "onnx"
    assert json.loads(v1["fct.source"])["uri"] == V1_FILE
    assert "fct.source" not in v2 and "fct.preprocess" not in v2
    side_ref = v2["fct.side_info"]
    assert v1["fct.side_info"] == side_ref
    name, version = side_ref.split("/")
    side = client.get_model_version(name, version).tags
    assert json.loads(side["fct.source"])["kind"] == "torchscript"
    assert json.loads(side["fct.source"])["uri"] == SIDE_FILE
    assert (project / "outputs" / "gate").is_dir()


def _rows(gallery: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(gallery.rglob("*.parquet")))
    ids = table.column("id").to_pylist()
    order = np.argsort([int(re.findall(r"\d+", i)[-1]) for i in ids])
    out = {"id": np.asarray(ids)[order]}
    for column in ("embedding", "side_info"):
        out[column] = np.asarray(table.column(column).to_pylist(), np.float32)[order]
    return out


@e2e
def test_embed_with_external_version_1_then_upgrade_to_trained_version_2(
    project: Path, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    common = ("--no-progress", "--workers", "0")
    embedded = _run(
        project, "-m", "fct_registry", "embed", "--model", f"{FAMILY}@1", "--split", "test",
        "--out", str(tmp_path / "g1"), *common,
    )  # fmt: skip
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    upgraded = _run(
        project, "-m", "fct_registry", "upgrade", "--gallery", str(tmp_path / "g1"),
        "--to", f"{FAMILY}@2", "--out", str(tmp_path / "g2"),
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    images = load_file(str(project / "outputs/data/test.safetensors"))["images"]
    g1, g2 = _rows(tmp_path / "g1"), _rows(tmp_path / "g2")
    np.testing.assert_allclose(g1["embedding"], _direct(images, project, "v1"), atol=1e-5)
    np.testing.assert_allclose(g1["side_info"], _direct(images, project, "side_info"), atol=1e-5)
    assert list(g2["id"]) == list(g1["id"]) and g2["embedding"].shape == (len(images), 16)
    assert np.isfinite(g2["embedding"]).all()


def _changed(project: Path) -> set[str]:
    status = _run(project, "-m", "dvc", "status", "--json")
    assert status.returncode == 0, status.stderr
    stages = json.loads(status.stdout or "{}")
    return {name for name, why in stages.items() if why != ["always changed"]}  # register, gate


@e2e
def test_replacing_a_model_file_reruns_the_stages_that_run_it(project: Path) -> None:
    """Runs last: it replaces the files (and puts them back)."""
    assert _changed(project) == set()  # repro left everything up to date
    v1, side = (project / V1_FILE).read_bytes(), (project / SIDE_FILE).read_bytes()
    try:
        _write_v1(project / V1_FILE, seed=7)
        changed = _changed(project)
        assert "train@1" in changed and "side_info" not in changed, changed
        (project / V1_FILE).write_bytes(v1)
        assert _changed(project) == set()
        _write_side(project / SIDE_FILE, seed=8)
        assert "side_info" in _changed(project)
    finally:
        (project / V1_FILE).write_bytes(v1)
        (project / SIDE_FILE).write_bytes(side)


def test_stage_deps_follows_the_model_files_in_params(tmp_path: Path) -> None:
    """Fast: `stage_deps.py --model-files` checks and writes the model-file deps and the
    side_info stage's trained_with entry from params, and undoes them when params go back."""
    _copy(tmp_path, "dvc.yaml", "fct_registry", "scripts/stage_deps.py")
    original = (tmp_path / "dvc.yaml").read_text()
    raw = _params()
    raw["versions"]["3"] = {
        "source": {"entrypoint": {"factory": "my_models:build", "weights": "w.safetensors"}},
        "embedding_dim": 8,
        "preprocess": PREPROCESS,
    }
    (tmp_path / "my_models.py").write_text("def build():\n    pass\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))

    check = _run(tmp_path, "scripts/stage_deps.py", "--model-files")
    assert check.returncode == 1 and "params name ['external/v1.onnx'" in check.stdout, check
    assert "lists versions.${side_info.trained_with}" in check.stdout
    assert _run(tmp_path, "scripts/stage_deps.py", "--write", "--model-files").returncode == 0
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    train = stages["train"]["do"]["deps"]
    assert [d for d in train if not d.startswith(("fct_registry", "pipelines", "outputs"))] == [
        V1_FILE,
        "my_models.py",
        "w.safetensors",
    ]
    assert SIDE_FILE in stages["side_info"]["deps"]
    assert not any("trained_with" in p for p in stages["side_info"]["params"])
    assert _run(tmp_path, "scripts/stage_deps.py", "--model-files").returncode == 0

    # Back to the default params: the same dvc.yaml as before, byte for byte.
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert _run(tmp_path, "scripts/stage_deps.py", "--write", "--model-files").returncode == 0
    assert (tmp_path / "dvc.yaml").read_text() == original
