"""Adopting a running deployment: a gallery indexed without side-info upgrades through a chain
that reads none; ``fct gallery add-side-info`` adds side-info from the images (embeddings copied,
side-info equal to a one-by-one oracle), after which the upgrade takes the chain that reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fct_registry.cli import main
from fct_registry.data.decode import ImageTransform
from fct_registry.data.image_sources import open_source
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.embed_job import JOB_FILE, SKIPPED_REPORT
from fct_registry.training.embed import embed_images
from tests.conftest import ROOT
from tests.data.images import write_imagefolder
from tests.upgrade.conftest import (
    FAMILY,
    HIDDEN,
    NEW_DIM,
    OLD_DIM,
    SIDE,
    TinyRegistry,
    _build_tiny_registry,
    snapshot,
)

pytestmark = pytest.mark.slow  # builds a small MLflow registry (~30 s)

WITH_SIDE_INFO, WITHOUT_SIDE_INFO = 1, 2  # versions of tiny-transformations
JOB = ["--batch-size", "8", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def adopt_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRegistry]:
    """The tiny family (v1 -> v2 through transformation 1, reading side-info 1) plus
    transformation 2: v1 -> v2 reading no side-info, with a lower top-1."""
    import mlflow

    from fct_registry.models.io import build_from_spec
    from fct_registry.registry import flavor
    from fct_registry.registry import tags as fct_tags

    root = tmp_path_factory.mktemp("adopt-registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.setenv("MLFLOW_REGISTRY_URI", uri)
        try:
            transformation, models = _build_tiny_registry(root, uri)
            spec = {
                "kind": "transformation",
                "type": "fct-no-side-info",
                "old_dim": OLD_DIM,
                "new_dim": NEW_DIM,
                "side_info_dim": 0,
                "hidden_dim": HIDDEN,
            }
            models["no-side"] = build_from_spec(spec).eval()
            with mlflow.start_run():
                flavor.log_model(
                    models["no-side"],
                    "model",
                    spec=spec,
                    registered_model_name=fct_tags.transformations_model_name(FAMILY),
                    tags={
                        fct_tags.ROLE: fct_tags.ROLE_TRANSFORMATION,
                        fct_tags.FAMILY: FAMILY,
                        fct_tags.SOURCE: "1",
                        fct_tags.TARGET: "2",
                        fct_tags.SIDE_INFO_DIM: "0",
                        fct_tags.KIND: "fct-no-side-info",
                        fct_tags.TOP1: "30.0",
                        fct_tags.MEASURED_RUN: "test-measurement",
                    },
                )
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
    yield TinyRegistry(uri, root, root / "images.safetensors", transformation, models)


@pytest.fixture
def reg(adopt_registry: TinyRegistry, monkeypatch: pytest.MonkeyPatch) -> TinyRegistry:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", adopt_registry.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", adopt_registry.uri)
    mlflow.set_tracking_uri(adopt_registry.uri)
    mlflow.set_registry_uri(adopt_registry.uri)
    return adopt_registry


def _common(reg: TinyRegistry) -> list[str]:
    return ["--tracking-uri", reg.uri, "--no-progress"]


def _embed(reg: TinyRegistry, images: str, out: Path, *extra: str) -> int:
    return main(
        [
            "embed",
            "--model",
            "tiny@1",
            "--images",
            images,
            "--out",
            str(out),
            *JOB,
            "--shard-rows",
            "25",
            *_common(reg),
            *extra,
        ]
    )


def _add(reg: TinyRegistry, gallery: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "gallery",
            "add-side-info",
            str(gallery),
            "--out",
            str(out),
            *JOB,
            "--shard-rows",
            "20",
            *_common(reg),
            *extra,
        ]
    )


def _upgrade(reg: TinyRegistry, gallery: Path, out: Path) -> int:
    return main(
        [
            "upgrade",
            "--gallery",
            str(gallery),
            "--to",
            "tiny@2",
            "--out",
            str(out),
            "--batch-size",
            "16",
            *_common(reg),
        ]
    )


def _table(out: Path) -> pa.Table:
    gallery = Gallery.open(str(out))
    return pa.concat_tables(pq.read_table(out / s.path) for s in gallery.manifest.shards)


def _matrix(table: pa.Table, column: str) -> np.ndarray:
    return np.stack(table.column(column).to_numpy(zero_copy_only=False)).astype(np.float32)


def _chain_versions(upgraded: Path) -> list[int]:
    plan = Gallery.open(str(upgraded)).manifest.provenance["plan"]
    return [step["version"] for chain in plan["chains"] for step in chain["steps"]]


def test_adopt_a_gallery_without_side_info(reg: TinyRegistry, tmp_path: Path) -> None:
    _, labels = write_imagefolder(tmp_path / "tree", 50, fmt="PNG")
    bare, full = tmp_path / "bare", tmp_path / "full"
    assert _embed(reg, str(tmp_path / "tree"), bare, "--without-side-info") == 0
    assert _embed(reg, str(tmp_path / "tree"), full) == 0
    assert gallery_schema.SIDE_INFO not in _table(bare).column_names

    # 1. As indexed, the gallery upgrades through the chain that reads no side-info.
    assert _upgrade(reg, bare, tmp_path / "bare-v2") == 0
    assert _chain_versions(tmp_path / "bare-v2") == [WITHOUT_SIDE_INFO]

    # 2. Side-info added: same rows, embeddings copied bit for bit, side-info as `fct embed`
    #    stores it and as the extractor gives it on each image alone.
    added = tmp_path / "added"
    assert _add(reg, bare, added) == 0
    before, after, reference = _table(bare), _table(added), _table(full)
    assert (
        after.column(gallery_schema.ID).to_pylist() == before.column(gallery_schema.ID).to_pylist()
    )
    assert after.column(gallery_schema.LABEL).to_pylist() == labels.tolist()
    assert (
        after.column(gallery_schema.SOURCE_URI).to_pylist()
        == before.column(gallery_schema.SOURCE_URI).to_pylist()
    )
    np.testing.assert_array_equal(
        _matrix(after, gallery_schema.EMBEDDING), _matrix(before, gallery_schema.EMBEDDING)
    )
    assert set(after.column(gallery_schema.SIDE_INFO_VERSION).to_pylist()) == {SIDE}
    source = open_source(str(tmp_path / "tree"))
    transform = ImageTransform.for_input_shape([1, 28, 28])
    one_by_one = torch.stack([source.load(item, transform) for item in source.items()])
    oracle = embed_images(reg.models["side"], one_by_one, torch.device("cpu")).numpy()
    np.testing.assert_allclose(
        _matrix(after, gallery_schema.SIDE_INFO), oracle, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        _matrix(after, gallery_schema.SIDE_INFO),
        _matrix(reference, gallery_schema.SIDE_INFO),
        rtol=1e-6,
        atol=1e-6,
    )
    manifest = Gallery.open(str(added)).manifest
    assert manifest.groups == {(1, SIDE): 50} and len(manifest.shards) == 3  # 20 + 20 + 10

    # 3. Now the upgrade takes the chain that reads side-info, as for a gallery indexed with it.
    assert _upgrade(reg, added, tmp_path / "added-v2") == 0
    assert _chain_versions(tmp_path / "added-v2") == [WITH_SIDE_INFO]
    assert _upgrade(reg, full, tmp_path / "full-v2") == 0
    np.testing.assert_allclose(
        _matrix(_table(tmp_path / "added-v2"), gallery_schema.EMBEDDING),
        _matrix(_table(tmp_path / "full-v2"), gallery_schema.EMBEDDING),
        rtol=1e-5,
        atol=1e-5,
    )

    # 4. Rerunning does nothing; the input gallery was never touched.
    done = snapshot(added)
    assert _add(reg, bare, added) == 0
    assert snapshot(added) == done


def test_prepared_split_rows(reg: TinyRegistry, tmp_path: Path) -> None:
    """Rows indexed from a safetensors split (source URIs ``FILE#row``) are read back by row."""
    bare, full, added = tmp_path / "bare", tmp_path / "full", tmp_path / "added"
    assert _embed(reg, str(reg.images), bare, "--without-side-info", "--limit", "30") == 0
    assert _embed(reg, str(reg.images), full, "--limit", "30") == 0
    assert _add(reg, bare, added) == 0
    assert (
        _table(added)
        .column(gallery_schema.SOURCE_URI)
        .to_pylist()[7]
        .endswith("images.safetensors#7")
    )
    np.testing.assert_allclose(
        _matrix(_table(added), gallery_schema.SIDE_INFO),
        _matrix(_table(full), gallery_schema.SIDE_INFO),
        atol=1e-6,
    )


def test_kill_9_then_resume_is_byte_identical(reg: TinyRegistry, tmp_path: Path) -> None:
    write_imagefolder(tmp_path / "tree", 50, fmt="PNG")
    bare, reference, out = tmp_path / "bare", tmp_path / "reference", tmp_path / "out"
    assert _embed(reg, str(tmp_path / "tree"), bare, "--without-side-info") == 0
    assert _add(reg, bare, reference) == 0
    argv = ["gallery", "add-side-info", str(bare), "--out", str(out), *JOB, "--shard-rows", "20"]
    argv += _common(reg)
    env = reg.env() | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    killed = [
        sys.executable,
        "-m",
        "tests.support.kill_at",
        "fct_registry.gallery.embed_job",
        "marker:1",
    ]
    run = subprocess.run([*killed, *argv], env=env, capture_output=True, timeout=300, cwd=ROOT)
    assert run.returncode == -9
    assert (out / JOB_FILE).exists() and not (out / "manifest.json").exists()
    again = [sys.executable, "-m", "fct_registry", *argv]
    run = subprocess.run(again, env=env, capture_output=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert snapshot(out) == snapshot(reference)


def test_missing_images_fail_or_are_left_out(
    reg: TinyRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_imagefolder(tmp_path / "tree", 30, fmt="PNG")
    bare = tmp_path / "bare"
    assert _embed(reg, str(tmp_path / "tree"), bare, "--without-side-info") == 0
    gone = sorted((tmp_path / "tree").rglob("*.png"))[3]
    gone.unlink()
    capsys.readouterr()

    assert _add(reg, bare, tmp_path / "fail") == 2
    err = capsys.readouterr().err
    assert gone.name in err and "--on-bad-image skip" in err and "Traceback" not in err
    assert not (tmp_path / "fail" / "manifest.json").exists()

    out = tmp_path / "skip"
    # (decoded in two DataLoader worker processes here)
    assert _add(reg, bare, out, "--on-bad-image", "skip", "--json", "--workers", "2") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 29 and summary["skipped"] == 1
    report = [json.loads(line) for line in (out / SKIPPED_REPORT).read_text().splitlines()]
    assert report[0]["uri"] == str(gone)
    assert len(_table(out)) == 29


def test_refusals(reg: TinyRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_imagefolder(tmp_path / "tree", 10, fmt="PNG")
    full, bare = tmp_path / "full", tmp_path / "bare"
    assert _embed(reg, str(tmp_path / "tree"), full) == 0
    assert _embed(reg, str(tmp_path / "tree"), bare, "--without-side-info") == 0
    capsys.readouterr()
    assert _add(reg, full, tmp_path / "o1") == 2
    assert "already stores side-info (tiny-side-info/1)" in capsys.readouterr().err
    assert _add(reg, bare, bare) == 2
    assert "--out is the gallery itself" in capsys.readouterr().err
    assert _add(reg, bare, tmp_path / "o2", "--side-info", "other-side-info/1") == 2
    assert "use tiny-side-info/N" in capsys.readouterr().err
    assert _add(reg, bare, tmp_path / "o3") == 0  # a refused run left nothing in the way
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
