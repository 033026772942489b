"""``fct embed`` over image files: folders, tar shards and S3 in, a gallery out; bad images
under both policies; kill -9 and resume to byte-identical output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
from tests.data.images import encode, write_flat, write_imagefolder
from tests.upgrade.conftest import TinyRegistry, registry, snapshot, tiny_registry  # noqa: F401

pytestmark = pytest.mark.slow  # builds a small MLflow registry once (~30 s)


def _args(reg: TinyRegistry, images: list[str], out: Path | str, *extra: str) -> list[str]:
    return [
        "embed",
        "--model",
        "tiny@1",
        "--images",
        *images,
        "--out",
        str(out),
        "--shard-rows",
        "25",
        "--batch-size",
        "8",
        "--workers",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--tracking-uri",
        reg.uri,
        *extra,
    ]


def _table(out: Path):
    gallery = Gallery.open(str(out))
    import pyarrow as pa

    tables = [pq.read_table(out / s.path) for s in gallery.manifest.shards]
    return gallery, pa.concat_tables(tables)


def test_embed_imagefolder_rows_match_a_naive_loop(
    registry: TinyRegistry,  # noqa: F811
    tmp_path: Path,
) -> None:
    _, labels = write_imagefolder(tmp_path / "tree", 60, fmt="JPEG")
    assert main(_args(registry, [str(tmp_path / "tree")], tmp_path / "g")) == 0
    gallery, table = _table(tmp_path / "g")
    assert gallery.manifest.rows == 60 and len(gallery.manifest.shards) == 3  # 25 + 25 + 10
    ids = table.column(gallery_schema.ID).to_pylist()
    assert ids == sorted(ids) and ids[0].startswith("class-0/")
    assert table.column(gallery_schema.LABEL).to_pylist() == labels.tolist()
    uris = table.column(gallery_schema.SOURCE_URI).to_pylist()
    assert uris[0] == str(tmp_path / "tree" / ids[0])
    # Oracle: decode each file on its own (no workers) and embed it alone.
    source = open_source(str(tmp_path / "tree"))
    transform = ImageTransform.for_input_shape([1, 28, 28])
    one_by_one = [source.load(item, transform) for item in source.items()]
    expected = embed_images(registry.models["v1"], torch.stack(one_by_one), torch.device("cpu"))
    got = np.stack(table.column(gallery_schema.EMBEDDING).to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)
    side = np.stack(table.column(gallery_schema.SIDE_INFO).to_numpy(zero_copy_only=False))
    expected_side = embed_images(
        registry.models["side"], torch.stack(one_by_one), torch.device("cpu")
    )
    np.testing.assert_allclose(side, expected_side.numpy(), rtol=1e-5, atol=1e-5)
    provenance = gallery.manifest.provenance
    assert provenance["source"]["kind"] == "imagefolder" and provenance["skipped"] == 0
    # Rerunning the finished command does nothing; another command is refused.
    before = snapshot(tmp_path / "g")
    assert main(_args(registry, [str(tmp_path / "tree")], tmp_path / "g")) == 0
    assert snapshot(tmp_path / "g") == before
    assert main(_args(registry, [str(tmp_path / "tree")], tmp_path / "g", "--limit", "5")) == 2


def test_bad_image_fail_and_skip(
    registry: TinyRegistry,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    images = write_flat(tmp_path / "flat", 40)
    (tmp_path / "flat" / "00007.png").write_bytes(encode(images[7])[:50])  # truncated
    (tmp_path / "flat" / "00031.png").write_text("hello")  # not an image
    assert main(_args(registry, [str(tmp_path / "flat")], tmp_path / "fail")) == 2
    err = capsys.readouterr().err
    assert "00007.png is a corrupt or truncated PNG" in err and "--on-bad-image skip" in err
    assert "Traceback" not in err
    assert not (tmp_path / "fail" / "manifest.json").exists()  # nothing half-written...
    leftovers = [p.name for p in (tmp_path / "fail").rglob("*") if p.is_file()]
    assert not [n for n in leftovers if n.endswith(".fct-tmp")]

    out = tmp_path / "skip"
    assert main(_args(registry, [str(tmp_path / "flat")], out, "--on-bad-image", "skip")) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 bad image(s)" in printed
    gallery, table = _table(out)
    assert gallery.manifest.rows == 38
    assert "00007.png" not in table.column(gallery_schema.ID).to_pylist()
    report = [json.loads(line) for line in (out / SKIPPED_REPORT).read_text().splitlines()]
    assert [r["id"] for r in report] == ["00007.png", "00031.png"]
    assert "not an image" in report[1]["reason"]
    assert gallery.manifest.provenance["skipped"] == 2


def test_safetensors_and_tar_shards(registry: TinyRegistry, tmp_path: Path) -> None:  # noqa: F811
    from tests.data.test_image_sources import write_tar

    images, labels = write_imagefolder(tmp_path / "tree", 30)
    write_tar(tmp_path / "s-000.tar", images[:20], labels[:20])
    write_tar(tmp_path / "s-001.tar", images[20:], labels[20:], start=20)
    shards = [str(tmp_path / "s-000.tar"), str(tmp_path / "s-001.tar")]
    assert main(_args(registry, shards, tmp_path / "g")) == 0
    _, table = _table(tmp_path / "g")
    assert table.column(gallery_schema.ID).to_pylist() == [f"s{i:05d}" for i in range(30)]
    assert table.column(gallery_schema.SOURCE_URI).to_pylist()[21] == f"{shards[1]}#s00021.png"
    # The prepared safetensors split still works, rows named <stem>-<row>.
    assert main(_args(registry, [str(registry.images)], tmp_path / "st", "--limit", "30")) == 0
    _, table = _table(tmp_path / "st")
    assert table.column(gallery_schema.ID).to_pylist()[:2] == ["images-0000000", "images-0000001"]


def _embed_process(reg: TinyRegistry, args: list[str], kill_at: str | None) -> int:
    env = reg.env() | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if kill_at:  # the same command, SIGKILLed when the job reaches that point
        cmd = [
            sys.executable,
            "-m",
            "tests.support.kill_at",
            "fct_registry.gallery.embed_job",
            kill_at,
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "fct_registry", *args]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=300, cwd=ROOT).returncode


@pytest.mark.parametrize("kill_at", ["batch:1:0", "marker:1", "manifest"])
def test_kill_9_then_resume_is_byte_identical(
    tiny_registry: TinyRegistry,  # noqa: F811
    tmp_path: Path,
    kill_at: str,
) -> None:
    write_imagefolder(tmp_path / "tree", 70, fmt="JPEG")
    reference = tmp_path / "reference"
    assert (
        _embed_process(
            tiny_registry, _args(tiny_registry, [str(tmp_path / "tree")], reference), None
        )
        == 0
    )
    out = tmp_path / "out"
    args = _args(tiny_registry, [str(tmp_path / "tree")], out, "--json")
    assert _embed_process(tiny_registry, args, kill_at) == -9
    assert not (out / "manifest.json").exists() or kill_at == "manifest"
    if kill_at != "manifest":
        assert (out / JOB_FILE).exists()
    assert _embed_process(tiny_registry, args, None) == 0
    assert snapshot(out) == snapshot(reference)
    assert not (out / JOB_FILE).exists()


@pytest.mark.services
def test_embed_from_s3_into_s3(registry: TinyRegistry, tmp_path: Path, s3) -> None:  # noqa: F811
    write_imagefolder(tmp_path / "tree", 30, fmt="JPEG")
    for path in sorted((tmp_path / "tree").rglob("*.jpg")):
        s3.client.put_object(
            Bucket=s3.bucket,
            Key=f"photos/{path.relative_to(tmp_path / 'tree').as_posix()}",
            Body=path.read_bytes(),
        )
    assert main(_args(registry, [str(tmp_path / "tree")], tmp_path / "local")) == 0
    assert main(_args(registry, [s3.uri("photos")], s3.uri("galleries/v1"))) == 0
    remote = Gallery.open(s3.uri("galleries/v1"))
    local = Gallery.open(str(tmp_path / "local"))
    assert remote.manifest.rows == 30
    # The same pixels give the same rows; only the source URIs differ.
    import io

    import pyarrow as pa

    key = f"galleries/v1/{remote.manifest.shards[0].path}"
    body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    remote_rows = pq.read_table(io.BytesIO(body))
    local_rows = pq.read_table(tmp_path / "local" / local.manifest.shards[0].path)
    assert remote_rows.column(gallery_schema.ID) == local_rows.column(gallery_schema.ID)
    assert remote_rows.column(gallery_schema.EMBEDDING) == local_rows.column(
        gallery_schema.EMBEDDING
    )
    assert remote_rows.column(gallery_schema.SOURCE_URI).to_pylist()[0] == s3.uri(
        f"photos/{local_rows.column(gallery_schema.ID)[0]}"
    )
    assert isinstance(remote_rows, pa.Table)
    assert main(_args(registry, [s3.uri("no/such/prefix")], tmp_path / "x")) == 2
