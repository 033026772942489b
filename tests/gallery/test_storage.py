"""Local and S3 storage: atomic publishing, listing, cleanup, and errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fct_registry.gallery.errors import NotFoundError, StorageError, StorageUnreachableError
from fct_registry.storage import (
    TMP_SUFFIX,
    LocalStorage,
    S3Storage,
    Storage,
    open_storage,
)
from tests.upgrade.conftest import S3


def _roundtrip(storage: Storage) -> None:
    assert storage.list() == []
    storage.write_bytes("a.bin", b"hello")
    storage.write_bytes("sub/b.bin", b"world")
    assert storage.list() == ["a.bin", "sub/b.bin"]
    assert storage.exists("a.bin") and not storage.exists("c.bin")
    assert storage.read_bytes("sub/b.bin") == b"world"
    with storage.local_copy("a.bin") as path:
        assert Path(path).read_bytes() == b"hello"
    assert storage.sha256("a.bin") == (
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )
    with pytest.raises(RuntimeError), storage.atomic_file("c.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer died")
    assert not storage.exists("c.bin"), "a failed write must publish nothing"
    with pytest.raises(NotFoundError):
        storage.read_bytes("c.bin")
    storage.delete("sub/b.bin")
    assert storage.list() == ["a.bin"]


def test_local_roundtrip(tmp_path: Path) -> None:
    _roundtrip(open_storage(tmp_path / "g"))


def test_s3_roundtrip(s3: S3) -> None:
    _roundtrip(open_storage(s3.uri("galleries/g")))


def test_local_leftovers_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_bytes("keep.bin", b"x")
    (tmp_path / f".part-00000.parquet{TMP_SUFFIX}").write_bytes(b"half")
    assert storage.remove_temporaries() == [f".part-00000.parquet{TMP_SUFFIX}"]
    assert storage.list() == ["keep.bin"]


def test_s3_unfinished_multipart_upload_is_aborted(s3: S3) -> None:
    storage = S3Storage(s3.uri("g"))
    s3.client.create_multipart_upload(Bucket=s3.bucket, Key="g/part-00000.parquet")
    assert storage.remove_temporaries() == ["part-00000.parquet"]
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []
    assert not storage.exists("part-00000.parquet")


def test_overlap_is_detected(tmp_path: Path) -> None:
    assert LocalStorage(tmp_path).contains(LocalStorage(tmp_path / "inner"))
    assert not LocalStorage(tmp_path / "a").contains(LocalStorage(tmp_path / "ab"))
    assert S3Storage("s3://b/x").contains(S3Storage("s3://b/x/y"))
    assert not S3Storage("s3://b/x").contains(S3Storage("s3://b/xy"))


def test_unreachable_endpoint_names_it_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.services import free_port
    from tests.upgrade.conftest import S3_ENV

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    with pytest.raises(StorageUnreachableError) as err:
        open_storage("s3://bucket/g").list()
    assert endpoint in str(err.value) and "AWS_ENDPOINT_URL" in str(err.value)


def test_missing_bucket_says_create_it(s3: S3) -> None:
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket' does not exist.*create"):
        open_storage("s3://no-such-bucket/g").write_bytes("x", b"1")


def test_other_schemes_are_refused() -> None:
    with pytest.raises(StorageError, match=r"use a local folder or s3://"):
        open_storage("gs://bucket/g")
