"""``fct embed``, ``fct upgrade`` and ``fct search`` end to end against a real MLflow registry,
including kill -9 at several points and resuming to byte-identical output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fct_registry.cli import main
from fct_registry.evaluation.retrieval import retrieval_scores
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from fct_registry.upgrade.job import JOB_FILE
from tests.conftest import ROOT
from tests.support.services import free_port
from tests.upgrade.conftest import (
    S3_ENV,
    TinyRegistry,
    snapshot,
    synthetic_rows,
    write_gallery,
)

pytestmark = pytest.mark.slow  # builds a registry (MLflow + ONNX exports) once: ~30 s

BATCH = "16"


def _embed(reg: TinyRegistry, version: int, out: Path, shard_rows: int = 40) -> None:
    assert (
        main(
            [
                "embed",
                "--model",
                f"tiny@{version}",
                "--images",
                str(reg.images),
                "--out",
                str(out),
                "--shard-rows",
                str(shard_rows),
                "--device",
                "cpu",
                "--tracking-uri",
                reg.uri,
            ]
        )
        == 0
    )


def _rows(location: Path) -> object:
    import pyarrow as pa

    table = pa.Table.from_batches(list(Gallery.open(location).batches()))
    return table.combine_chunks().to_batches()[0]


def _upgrade_args(reg: TinyRegistry, src: Path | str, out: Path | str, *extra: str) -> list[str]:
    return [
        "upgrade",
        "--gallery",
        str(src),
        "--to",
        "tiny@2",
        "--out",
        str(out),
        "--batch-size",
        BATCH,
        "--tracking-uri",
        reg.uri,
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def galleries(
    tiny_registry: TinyRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """v1 and v2 galleries of the same 240 images, and v1 upgraded to v2, through the CLI."""
    reg = tiny_registry
    root = tmp_path_factory.mktemp("galleries")
    with pytest.MonkeyPatch.context() as env:  # later test modules get their own stores
        env.setenv("MLFLOW_TRACKING_URI", reg.uri)
        env.setenv("MLFLOW_REGISTRY_URI", reg.uri)
        _embed(reg, 1, root / "v1")
        _embed(reg, 2, root / "v2")
        assert main(_upgrade_args(reg, root / "v1", root / "v1-to-2")) == 0
    return {"v1": root / "v1", "v2": root / "v2", "up": root / "v1-to-2"}


def test_embed_stores_embedding_side_info_and_versions(
    registry: TinyRegistry, galleries: dict[str, Path]
) -> None:
    from safetensors.torch import load_file

    from fct_registry.training.embed import embed_images

    images = load_file(str(registry.images))["images"]
    manifest = Gallery.open(galleries["v1"]).manifest
    assert manifest.rows == 240 and len(manifest.shards) == 6
    assert manifest.groups == {(1, "tiny-side-info/1"): 240}
    rows = _rows(galleries["v1"])
    cpu = torch.device("cpu")
    np.testing.assert_allclose(
        gallery_schema.vectors(rows, gallery_schema.EMBEDDING, "t"),
        embed_images(registry.models["v1"], images, cpu).numpy(),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        gallery_schema.vectors(rows, gallery_schema.SIDE_INFO, "t"),
        embed_images(registry.models["side"], images, cpu).numpy(),
        atol=1e-5,
    )
    assert (
        rows.column(gallery_schema.LABEL).to_pylist()
        == load_file(str(registry.images))["labels"].tolist()
    )


def test_upgraded_gallery_is_the_transformation_of_the_stored_vectors(
    registry: TinyRegistry, galleries: dict[str, Path]
) -> None:
    old, up = _rows(galleries["v1"]), _rows(galleries["up"])
    with torch.no_grad():
        want = registry.transformation(
            torch.tensor(gallery_schema.vectors(old, gallery_schema.EMBEDDING, "t")),
            torch.tensor(gallery_schema.vectors(old, gallery_schema.SIDE_INFO, "t")),
        ).numpy()
    np.testing.assert_allclose(
        gallery_schema.vectors(up, gallery_schema.EMBEDDING, "t"), want, atol=1e-5
    )
    prov = Gallery.open(galleries["up"]).manifest.provenance
    (chain,) = prov["plan"]["chains"]
    assert chain["steps"][0]["uri"] == "models:/tiny-transformations/1"
    assert chain["path"] == [1, 2] and chain["top1"] == 50.0
    assert len(prov["shards"]) == 6


def test_search_agrees_with_the_evaluation(
    registry: TinyRegistry, galleries: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """New-version queries against the upgraded gallery, leave-one-out: ``fct search`` and
    ``retrieval_scores`` (what the compatibility evaluation computes) give the same top-k."""
    assert (
        main(
            [
                "search",
                "--gallery",
                str(galleries["up"]),
                "--query-gallery",
                str(galleries["v2"]),
                "--exclude-self",
                "-k",
                "5",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    new, up = _rows(galleries["v2"]), _rows(galleries["up"])
    labels = torch.tensor(new.column(gallery_schema.LABEL).to_pylist())
    want = retrieval_scores(
        torch.tensor(gallery_schema.vectors(new, gallery_schema.EMBEDDING, "t")),
        torch.tensor(gallery_schema.vectors(up, gallery_schema.EMBEDDING, "t")),
        labels,
        labels,
        leave_one_out=True,
    )
    assert out["accuracy"]["top1"] == pytest.approx(want.top1, abs=1e-9)
    assert out["accuracy"]["top5"] == pytest.approx(want.top5, abs=1e-9)
    first = out["results"][0]
    assert first["query"] not in first["ids"] and len(first["ids"]) == 5
    # and the old gallery cannot be searched with new-version queries
    assert (
        main(["search", "--gallery", str(galleries["v1"]), "--query-gallery", str(galleries["v2"])])
        == 2
    )
    assert "upgrade the gallery" in capsys.readouterr().err


def test_dry_run_prints_the_chain_rows_and_estimate(
    registry: TinyRegistry,
    galleries: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(_upgrade_args(registry, galleries["v1"], tmp_path / "dry", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "rows: 240 in 6 shards" in out
    assert "tiny@1 -> 2 via tiny-transformations/1" in out
    assert "estimated time:" in out
    assert not (tmp_path / "dry").exists(), "a dry run writes nothing"


def test_progress_bar_shows_shards_and_rows(
    registry: TinyRegistry,
    galleries: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [
        a for a in _upgrade_args(registry, galleries["v1"], tmp_path / "o") if a != "--no-progress"
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "shards 6/6" in err and "240/240" in err


# --- kill -9 and resume -------------------------------------------------------------------------


def _killed_env(reg: TinyRegistry, out: Path) -> dict[str, str]:
    """The registry's environment, with TMPDIR beside ``out``: a killed upgrade leaves its
    scratch folder (the models it fetched) behind until the next upgrade, and a test leaves
    nothing in /tmp."""
    tmp = out.parent / "killed-tmp"
    tmp.mkdir(exist_ok=True)
    return {**reg.env(), "TMPDIR": str(tmp)}


def _killed(reg: TinyRegistry, src: Path, out: Path, point: str) -> None:
    """Run the CLI in a subprocess that SIGKILLs itself at ``point``."""
    env = {
        **_killed_env(reg, out),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.kill_at",
            "fct_registry.upgrade.job",
            point,
            *_upgrade_args(reg, src, out),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def test_kill_at_several_points_then_resume_is_byte_identical(
    registry: TinyRegistry,
    galleries: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean = snapshot(galleries["up"])
    out = tmp_path / "out"
    _killed(registry, galleries["v1"], out, "batch:1:1")  # mid-shard: half a temporary file
    left = snapshot(out)
    assert "part-00000.parquet" in left and "part-00001.parquet" not in left
    assert any(n.endswith(".fct-tmp") for n in left) and "manifest.json" not in left
    _killed(registry, galleries["v1"], out, "shard:3")  # shard 3 published, not yet marked
    assert "part-00003.parquet" in snapshot(out)
    _killed(registry, galleries["v1"], out, "manifest")  # manifest written, markers still there
    assert JOB_FILE in snapshot(out)
    # Each killed run left its scratch folder, and each run removed the one before it's.
    scratch_root = Path(_killed_env(registry, out)["TMPDIR"])
    assert len(list(scratch_root.glob("fct-upgrade-*"))) == 1
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    assert main(_upgrade_args(registry, galleries["v1"], out)) == 0
    assert snapshot(out) == clean
    assert list(scratch_root.glob("fct-upgrade-*")) == []


def test_external_kill_at_an_arbitrary_moment(
    registry: TinyRegistry, galleries: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fct_registry", *_upgrade_args(registry, galleries["v1"], out)],
        env=_killed_env(registry, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (out / JOB_FILE).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert main(_upgrade_args(registry, galleries["v1"], out)) == 0
    assert snapshot(out) == snapshot(galleries["up"])


# --- bad requests: exit 2 and a message naming the fix ------------------------------------------


def test_unknown_version(
    registry: TinyRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_gallery(tmp_path / "v7", synthetic_rows(10), version=7)
    assert main(_upgrade_args(registry, tmp_path / "v7", tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "10 rows of tiny@7" in err and "unknown version 7 of tiny; known: 1, 2" in err
    assert not (tmp_path / "o").exists()


def test_side_info_from_another_extractor(
    registry: TinyRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(10), side_info="other-side-info/1")
    assert main(_upgrade_args(registry, tmp_path / "g", tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "side-info mismatch" in err and "other-side-info/1" in err
    assert not (tmp_path / "o").exists()


def test_rows_without_side_info_need_a_chain_that_reads_none(
    registry: TinyRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(10), side_info=None)
    assert main(_upgrade_args(registry, tmp_path / "g", tmp_path / "o")) == 2
    assert "these rows have no side-info" in capsys.readouterr().err


def test_unreachable_s3_endpoint(
    registry: TinyRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    start = time.monotonic()
    assert main(_upgrade_args(registry, "s3://bucket/g", tmp_path / "o")) == 2
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert f"cannot reach the S3 endpoint {endpoint} (from AWS_ENDPOINT_URL)" in err


def test_embed_and_upgrade_through_s3(
    registry: TinyRegistry, s3: object, tmp_path: Path, galleries: dict[str, Path]
) -> None:
    src, dst = s3.uri("g/v1"), s3.uri("g/v1-to-2")
    assert (
        main(
            [
                "embed",
                "--model",
                "tiny@1",
                "--images",
                str(registry.images),
                "--out",
                src,
                "--shard-rows",
                "40",
                "--device",
                "cpu",
                "--tracking-uri",
                registry.uri,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "upgrade",
                "--gallery",
                src,
                "--to",
                "tiny@2",
                "--out",
                dst,
                "--batch-size",
                BATCH,
                "--tracking-uri",
                registry.uri,
                "--no-progress",
            ]
        )
        == 0
    )
    local = Gallery.open(galleries["up"]).manifest
    remote = Gallery.open(dst).manifest
    assert [s.sha256 for s in remote.shards] == [s.sha256 for s in local.shards]
