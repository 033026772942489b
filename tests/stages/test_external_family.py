"""A family of external and trained models, end to end under `dvc repro`.

One project covers every way a model can enter the family:

- the side-info extractor is a TorchScript file beside params.yaml;
- version 1 is an MLflow pytorch model the test logs into the project's store with
  ``mlflow.pytorch.log_model`` (its preprocessing recorded as MLmodel metadata);
- version 2 is an ONNX file beside params.yaml, reading a 24x24 centre crop (preprocessing in
  params: `fct embed` must apply the recorded resize-then-crop, not its default shrink);
- version 3 is trained by the pipeline (tiny epochs).

`scripts/stage_deps.py --write --model-files` makes the model files DVC deps of the stages that
run them; `dvc repro` then embeds, trains, registers (lineage tag ``fct.source`` on the external
models only) and gates. Every row the tool writes is checked against running the external models
directly; `fct embed` with version 1 and `fct upgrade` to versions 2 (external) and 3 (trained)
work; replacing a model file makes `dvc status` show the stages that run it as changed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, needs_fashion, tiny_params
from tests.support.external_models import MEAN, PREPROCESS, STD, project_env, tiny_net


def e2e(test):
    """The `dvc repro` tests: slow, and they need Fashion-MNIST."""
    return pytest.mark.slow(needs_fashion(test))


FAMILY = "byom"
V1_URI = "models:/prod-embedder/1"
V2_FILE, SIDE_FILE = "external/v2.onnx", "external/side.pt"
PREPROCESS_V2 = {**PREPROCESS, "crop": 24}
DIMS = {"v1": 8, "v2": 16, "v3": 16, "side_info": 12}


def _run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=project_env(cwd),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _edge(source: int, target: int) -> dict:
    return {
        "from": source,
        "to": target,
        "kind": "fct",
        "hidden_dim": 32,
        "optim": {"epochs": 2, "batch_size": 64, "max_batches": 3},
    }


def _params() -> dict:
    p = tiny_params()
    p["family"] = FAMILY
    p["device"] = "cpu"
    p["side_info"] = {
        "source": {"torchscript": {"path": SIDE_FILE}},
        "dim": DIMS["side_info"],
        "preprocess": PREPROCESS,
    }
    trained = p["versions"]["2"]
    trained["embedding_dim"] = DIMS["v3"]
    p["versions"] = {
        "1": {"source": {"mlflow": {"uri": V1_URI}}, "embedding_dim": DIMS["v1"]},
        "2": {
            "source": {"onnx": {"path": V2_FILE}},
            "embedding_dim": DIMS["v2"],
            "preprocess": PREPROCESS_V2,
        },
        "3": trained,
    }
    p["transformations"] = {"v1_to_v2": _edge(1, 2), "v2_to_v3": _edge(2, 3)}
    p["bct"] = {}
    p["backfill"] = {"enabled": False, "from": 1, "to": 2}  # it needs a trained classifier
    p["evaluation"] = {"bootstrap_resamples": 100}
    return p


@contextmanager
def _store(work: Path) -> Iterator[None]:
    """This process's MLflow calls go to the project's store, then back to the default."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def _log_v1(work: Path) -> None:
    """The external team's model, in the project's store, with its preprocessing recorded."""
    import mlflow
    import mlflow.pytorch

    example = np.random.default_rng(0).random((4, 1, 28, 28), np.float32)
    with _store(work):
        mlflow.set_experiment("prod-embedder")
        with mlflow.start_run():
            mlflow.pytorch.log_model(
                tiny_net(DIMS["v1"], 1),
                name="embedder",
                input_example=example,
                registered_model_name="prod-embedder",
                metadata={"preprocess": PREPROCESS},
            )


def _write_v2(path: Path, seed: int = 2) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        tiny_net(DIMS["v2"], seed),
        (torch.rand(4, 1, 24, 24),),
        dynamo=True,
        input_names=["pixels"],
        output_names=["features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    program.save(str(path))


def _write_side(path: Path, seed: int = 3) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    net = tiny_net(DIMS["side_info"], seed)
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 1, 28, 28)), str(path))


def _copy(work: Path, *items: str) -> None:
    for item in items:
        src, dst = ROOT / item, work / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("family")
    _copy(work, "dvc.yaml", ".dvcignore", "pipelines", "fct_registry", "scripts/stage_deps.py")
    (work / "params.yaml").write_text(yaml.safe_dump(_params()))
    _log_v1(work)
    _write_v2(work / V2_FILE)
    _write_side(work / SIDE_FILE)
    # As a user does after naming a model file in params: it becomes a dep of its stage.
    deps = _run(work, "scripts/stage_deps.py", "--write", "--model-files")
    assert deps.returncode == 0, deps.stdout + deps.stderr
    assert _run(work, "-m", "dvc", "init", "--no-scm", "-q").returncode == 0
    run = _run(work, "-m", "dvc", "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return work


def _test_images(project: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(project / "outputs/data/test.safetensors"))["images"]


def _direct(images: np.ndarray, project: Path, which: str) -> np.ndarray:
    """An external model run directly: torch for version 1 and side-info, onnxruntime for
    version 2 (on the centre crop its preprocessing names)."""
    import onnxruntime as ort
    import torch

    x = (images.astype(np.float32) / 255 - MEAN[0]) / STD[0]
    with torch.no_grad():
        if which == "v1":
            return tiny_net(DIMS["v1"], 1)(torch.from_numpy(x)).numpy()
        if which == "side_info":
            return torch.jit.load(str(project / SIDE_FILE))(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(project / V2_FILE))
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


def _fct(project: Path, *argv: str) -> None:
    proc = _run(project, "-m", "fct_registry", *argv)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _embed(project: Path, version: int, out: Path, *images: str) -> None:
    source = ["--images", *images] if images else ["--split", "test"]
    _fct(project, "embed", "--model", f"{FAMILY}@{version}", *source, "--out", str(out),
         "--no-progress", "--workers", "0")  # fmt: skip


@pytest.fixture(scope="module")
def gallery_v1(project: Path, tmp_path_factory) -> Path:
    """The test split embedded with version 1 by `fct embed`, shared by the upgrade tests."""
    out = tmp_path_factory.mktemp("galleries") / "g1"
    _embed(project, 1, out)
    return out


@e2e
def test_dvc_yaml_lists_the_model_files(project: Path) -> None:
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert SIDE_FILE in stages["side_info"]["deps"]
    assert V2_FILE in stages["train"]["do"]["deps"]
    # An external extractor trains on no version's images: the entry DVC cannot parse is gone.
    assert not any("trained_with" in p for p in stages["side_info"]["params"])


@e2e
def test_repro_registers_every_version_with_its_lineage(project: Path) -> None:
    from mlflow import MlflowClient
    from safetensors.numpy import load_file

    summary = json.loads((project / "outputs" / "registry.json").read_text())
    assert summary["family"] == FAMILY
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    tags = {v: client.get_model_version(FAMILY, str(v)).tags for v in (1, 2, 3)}
    v2_sha = hashlib.sha256((project / V2_FILE).read_bytes()).hexdigest()
    for version, kind, uri, preprocess in (
        (1, "mlflow", V1_URI, PREPROCESS),
        (2, "onnx", V2_FILE, PREPROCESS_V2),
    ):
        source = json.loads(tags[version]["fct.source"])
        assert source["kind"] == kind and source["uri"] == uri
        assert len(source["sha256"]) == 64
        assert json.loads(tags[version]["fct.preprocess"]) == preprocess
        assert tags[version]["fct.embedding_dim"] == str(DIMS[f"v{version}"])
    assert json.loads(tags[2]["fct.source"])["sha256"] == v2_sha
    assert "fct.source" not in tags[3] and "fct.preprocess" not in tags[3]  # trained here
    # One side-info extractor for the family, itself registered with its lineage.
    side_ref = tags[3]["fct.side_info"]
    assert side_ref.startswith(f"{FAMILY}-side-info/")
    assert tags[1]["fct.side_info"] == tags[2]["fct.side_info"] == side_ref
    side = client.get_model_version(*side_ref.split("/")).tags
    assert json.loads(side["fct.source"])["kind"] == "torchscript"
    assert json.loads(side["fct.source"])["uri"] == SIDE_FILE

    # The stages' stored test embeddings are the external models' own outputs.
    images = _test_images(project)
    for which in ("v1", "v2", "side_info"):
        stored = load_file(str(project / f"outputs/embeddings/{which}.safetensors"))["test"]
        np.testing.assert_allclose(stored, _direct(images, project, which), atol=1e-5)
    assert load_file(str(project / "outputs/embeddings/v3.safetensors"))["test"].shape[1] == 16
    assert (project / "outputs" / "gate").is_dir()


@e2e
def test_embed_applies_the_recorded_preprocessing(project: Path, tmp_path: Path) -> None:
    """Image files through `fct embed` with version 2: the recorded resize (28, then the 24
    crop), where the default without a record would shrink the images to 24; and the side-info
    extractor reads its own pixels (the whole 28x28 image), as the pipeline's side-info stage
    did, not the version's crop."""
    from PIL import Image

    images = _test_images(project)[:40]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"img-{i:04d}.png")
    _embed(project, 2, tmp_path / "g2", str(folder))
    rows = _rows(tmp_path / "g2")
    np.testing.assert_allclose(rows["embedding"], _direct(images, project, "v2"), atol=1e-5)
    np.testing.assert_allclose(rows["side_info"], _direct(images, project, "side_info"), atol=1e-5)


@e2e
def test_each_registered_model_decodes_with_its_own_preprocessing(project: Path) -> None:
    """What `fct embed`, `fct gallery add-side-info` and `fct backfill` decode for."""
    from fct_registry.gallery.embed import transform_for

    with _store(project):
        v2 = transform_for(f"models:/{FAMILY}/2")
        side = transform_for(f"models:/{FAMILY}-side-info/1")
        v2_resized = transform_for(f"models:/{FAMILY}/2", resize=32)  # --resize 32 wins
    assert (v2.shape, v2.resize) == ((1, 24, 24), 28)  # resize 28, then the 24 crop
    assert (side.shape, side.resize) == ((1, 28, 28), 28)
    assert v2_resized.resize == 32


@e2e
def test_embed_with_version_1_then_upgrade_to_external_version_2(
    project: Path, gallery_v1: Path, tmp_path: Path
) -> None:
    import torch

    from fct_registry.registry.flavor import load_model

    _fct(project, "upgrade", "--gallery", str(gallery_v1), "--to", f"{FAMILY}@2",
         "--out", str(tmp_path / "g2"))  # fmt: skip
    images = _test_images(project)
    g1 = _rows(gallery_v1)
    v1, side = _direct(images, project, "v1"), _direct(images, project, "side_info")
    np.testing.assert_allclose(g1["embedding"], v1, atol=1e-5)
    np.testing.assert_allclose(g1["side_info"], side, atol=1e-5)
    # The upgrade: the registered transformation (v1_to_v2, registered first) applied to the
    # external models' direct outputs.
    with _store(project):
        hop = load_model(f"models:/{FAMILY}-transformations/1")
    with torch.no_grad():
        want = hop(torch.from_numpy(v1), torch.from_numpy(side)).numpy()
    g2 = _rows(tmp_path / "g2")
    assert list(g2["id"]) == list(g1["id"])
    np.testing.assert_allclose(g2["embedding"], want, atol=1e-5)
    assert g2["embedding"].shape == (len(images), DIMS["v2"])


@e2e
def test_upgrade_from_external_version_1_to_trained_version_3(
    project: Path, gallery_v1: Path, tmp_path: Path
) -> None:
    """Two hops (external -> external -> trained), the chain the resolver picks."""
    _fct(project, "upgrade", "--gallery", str(gallery_v1), "--to", f"{FAMILY}@3",
         "--out", str(tmp_path / "g3"))  # fmt: skip
    g1, g3 = _rows(gallery_v1), _rows(tmp_path / "g3")
    assert list(g3["id"]) == list(g1["id"])
    assert g3["embedding"].shape == (len(g1["id"]), DIMS["v3"])
    assert np.isfinite(g3["embedding"]).all()


def _changed(project: Path) -> set[str]:
    status = _run(project, "-m", "dvc", "status", "--json")
    assert status.returncode == 0, status.stderr
    stages = json.loads(status.stdout or "{}")
    return {name for name, why in stages.items() if why != ["always changed"]}  # register, gate


@e2e
def test_replacing_a_model_file_reruns_the_stages_that_run_it(project: Path) -> None:
    """Runs last: it replaces the files (and puts them back)."""
    assert _changed(project) == set()  # repro left everything up to date
    v2, side = (project / V2_FILE).read_bytes(), (project / SIDE_FILE).read_bytes()
    try:
        _write_v2(project / V2_FILE, seed=7)
        changed = _changed(project)
        assert "train@2" in changed and "side_info" not in changed, changed
        (project / V2_FILE).write_bytes(v2)
        assert _changed(project) == set()
        _write_side(project / SIDE_FILE, seed=8)
        assert "side_info" in _changed(project)
    finally:
        (project / V2_FILE).write_bytes(v2)
        (project / SIDE_FILE).write_bytes(side)


def test_stage_deps_follows_the_model_files_in_params(tmp_path: Path) -> None:
    """Fast: `stage_deps.py --model-files` checks and writes the model-file deps and the
    side_info stage's trained_with entry from params, and undoes them when params go back."""
    _copy(tmp_path, "dvc.yaml", "fct_registry", "scripts/stage_deps.py")
    original = (tmp_path / "dvc.yaml").read_text()
    raw = _params()
    raw["versions"]["4"] = {
        "source": {"entrypoint": {"factory": "my_models:build", "weights": "w.safetensors"}},
        "embedding_dim": 8,
        "preprocess": PREPROCESS,
    }
    (tmp_path / "my_models.py").write_text("def build():\n    pass\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))

    check = _run(tmp_path, "scripts/stage_deps.py", "--model-files")
    assert check.returncode == 1 and f"params name ['{V2_FILE}'" in check.stdout, check
    assert "lists versions.${side_info.trained_with}" in check.stdout
    assert _run(tmp_path, "scripts/stage_deps.py", "--write", "--model-files").returncode == 0
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    train = stages["train"]["do"]["deps"]
    assert [d for d in train if not d.startswith(("fct_registry", "pipelines", "outputs"))] == [
        V2_FILE,
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
