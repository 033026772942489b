"""A full disk (ENOSPC) during ``fct upgrade`` and ``fct embed``: one line, exit 2, naming the
location and saying that a rerun resumes; nothing half-written published; the rerun finishes
the job and gives the same bytes as a run that never failed.

The disk fills through a patched low-level write (every Parquet shard goes through
``_HashingSink.write``): the first shards are written, the third one fails with ENOSPC.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fct_registry.cli import main
from fct_registry.gallery import shards
from fct_registry.storage import TMP_SUFFIX
from tests.upgrade.conftest import TinyRegistry, snapshot, synthetic_rows, write_gallery

slow = pytest.mark.slow  # the session registry (MLflow + ONNX exports): ~30 s once


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, shards_ok: int) -> None:
    """Shard files after the first ``shards_ok`` fail with ENOSPC on their first write."""
    real = shards._HashingSink.write
    # The sinks themselves, not their ids: a finished shard's sink is freed and its id can be
    # reused by the next one, which would then be counted as an earlier shard.
    sinks: list[shards._HashingSink] = []

    def write(self: shards._HashingSink, data: bytes) -> int:
        if not any(s is self for s in sinks):
            sinks.append(self)
        if next(i for i, s in enumerate(sinks) if s is self) >= shards_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(shards._HashingSink, "write", write)


def _published_whole(out: Path) -> list[str]:
    """The shards published in ``out``; each one reads back in full (nothing torn)."""
    names = sorted(p.name for p in out.glob("part-*.parquet"))
    for name in names:
        assert pq.read_table(out / name).num_rows > 0
    assert not [p for p in out.rglob("*") if p.name.endswith(TMP_SUFFIX)], "temporary left"
    assert not (out / "manifest.json").exists(), "an unfinished gallery has no manifest"
    return names


def _one_line_error(capsys: pytest.CaptureFixture[str], out: Path, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: no space left on device while writing ")
    assert str(out) in err and f"rerun the same `fct {command}` command" in err
    assert "resumes" in err and "Traceback" not in err
    return err


def _upgrade(reg: TinyRegistry, src: Path, out: Path) -> list[str]:
    return ["upgrade", "--gallery", str(src), "--to", "tiny@2", "--out", str(out),
            "--batch-size", "16", "--tracking-uri", reg.uri, "--no-progress"]  # fmt: skip


def _embed(reg: TinyRegistry, out: Path) -> list[str]:
    return ["embed", "--model", "tiny@1", "--images", str(reg.images), "--out", str(out),
            "--shard-rows", "40", "--device", "cpu", "--workers", "0", "--no-progress",
            "--tracking-uri", reg.uri]  # fmt: skip


@slow
def test_upgrade_on_a_full_disk_is_one_line_and_a_rerun_resumes(
    registry: TinyRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "v1"
    write_gallery(src, synthetic_rows(200), shard_rows=40)  # 5 shards
    assert main(_upgrade(registry, src, tmp_path / "clean")) == 0
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _fill_disk_after(patch, shards_ok=2)
        assert main(_upgrade(registry, src, out)) == 2
    _one_line_error(capsys, out, "upgrade")
    assert _published_whole(out) == ["part-00000.parquet", "part-00001.parquet"]
    assert main(_upgrade(registry, src, out)) == 0
    assert snapshot(out) == snapshot(tmp_path / "clean")


@slow
def test_embed_on_a_full_disk_is_one_line_and_a_rerun_resumes(
    registry: TinyRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(_embed(registry, tmp_path / "clean")) == 0
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _fill_disk_after(patch, shards_ok=2)
        assert main(_embed(registry, out)) == 2
    _one_line_error(capsys, out, "embed")
    assert _published_whole(out) == ["part-00000.parquet", "part-00001.parquet"]
    assert main(_embed(registry, out)) == 0
    assert snapshot(out) == snapshot(tmp_path / "clean")


def test_quota_exceeded_and_s3_staging_are_named(tmp_path: Path) -> None:
    import argparse

    from fct_registry.cli import no_space_message

    quota = OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp_path / "g" / "x.fct-tmp"))
    args = argparse.Namespace(command="upgrade", out=str(tmp_path / "g"))
    text = no_space_message(quota, args)
    assert text.startswith("disk quota exceeded while writing ") and "x.fct-tmp" in text
    s3 = argparse.Namespace(command="embed", out="s3://bucket/g")
    text = no_space_message(OSError(errno.ENOSPC, "No space left on device"), s3)
    assert "local temporary copy of s3://bucket/g" in text and "TMPDIR" in text


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device while"),
        # requests' errors are OSErrors (errno None): still the store's one line
        ("requests", "the tracking store or artifact store failed (ConnectionError"),
    ],
)
def test_cli_error_mapping_without_a_registry(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: object,
    expected: str,
) -> None:
    import requests

    from fct_registry.commands import search

    if raised == "requests":
        raised = requests.exceptions.ConnectionError("connection refused")

    def fail(args: object) -> int:
        raise raised  # type: ignore[misc]

    monkeypatch.setattr(search, "run", fail)
    write_gallery(tmp_path / "g", synthetic_rows(5))
    g = str(tmp_path / "g")
    assert main(["search", "--gallery", g, "--query-gallery", g]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {expected}"), err
