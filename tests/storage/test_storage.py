"""Local and S3 storage: atomic publishing, listing, cleanup, errors that name the fix, and one
place that configures boto3."""

from __future__ import annotations

import ast
import io
import re
import tarfile
from pathlib import Path

import pytest

from fct_registry._files import UnsafePathError
from fct_registry.data.tar_shards import TarMembers
from fct_registry.errors import DataError, NotFoundError, StorageError, StorageUnreachableError
from fct_registry.storage import (
    TMP_SUFFIX,
    LocalStorage,
    S3Storage,
    Storage,
    open_storage,
    s3_client,
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
    from tests.support.services import free_port
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


# --- one storage layer ---------------------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parents[2] / "fct_registry"


def _boto3_constructors(path: Path) -> list[int]:
    """Lines of ``path`` that build a boto3 client, resource or session."""
    pattern = re.compile(r"boto3(\.session)?\.(client|resource|Session|session)$")
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and pattern.match(ast.unparse(node.func))
    ]


def test_boto3_is_configured_in_one_place() -> None:
    where = {
        str(p.relative_to(PACKAGE)): lines
        for p in sorted(PACKAGE.rglob("*.py"))
        if (lines := _boto3_constructors(p))
    }
    assert list(where) == ["storage/s3.py"], f"boto3 clients built in {where}"


def test_a_client_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotated credentials (or another endpoint) get a new client, never the old one's."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    first = s3_client()
    assert s3_client() is first, "one client per process and environment"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second")
    second = s3_client()
    assert second is not first
    assert second._request_signer._credentials.access_key == "second"
    assert S3Storage("s3://b/g").client is second, "galleries and images share the client"


def test_listing_refuses_a_key_that_is_not_a_plain_name(s3: S3) -> None:
    """A gallery listing checks every key as image listings do: ``a//b`` would name ``a/b``."""
    s3.client.put_object(Bucket=s3.bucket, Key="g/ok.bin", Body=b"1")
    s3.client.put_object(Bucket=s3.bucket, Key="g/a//b.bin", Body=b"2")
    with pytest.raises(UnsafePathError, match=r"object key 'a//b.bin'"):
        open_storage(s3.uri("g")).list()


def test_local_and_s3_list_the_same_names_in_the_same_order(s3: S3, tmp_path: Path) -> None:
    names = ["a-b.bin", "a/b.bin", "a/c/d.bin", "a0.bin", "B.bin"]
    local, remote = open_storage(tmp_path / "g"), open_storage(s3.uri("g"))
    for name in names:
        local.write_bytes(name, name.encode())
        remote.write_bytes(name, name.encode())
    assert local.list() == remote.list() == sorted(names)  # byte order of the full path
    assert list(local.walk("a")) == list(remote.walk("a")) == ["a/b.bin", "a/c/d.bin"]
    assert local.children() == remote.children() == (["a"], ["B.bin", "a-b.bin", "a0.bin"])


def test_storage_errors_are_data_errors(tmp_path: Path) -> None:
    """What reads images catches DataError: a store that fails is reported the same way."""
    with pytest.raises(DataError, match=r"does not exist .*broken link"):
        open_storage(tmp_path).read_bytes("gone.png")
    assert issubclass(StorageError, DataError)


def test_tar_members_are_read_by_name_like_tarfile_extracts_them(tmp_path: Path) -> None:
    members = {f"k{i:02d}.png": bytes([i]) * (i * 37 + 1) for i in range(6)}
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    reader = TarMembers()
    with tarfile.open(tmp_path / "s.tar") as tar:  # the oracle: tarfile's own extraction
        for name in reversed(list(members)):
            assert reader.read(str(tmp_path / "s.tar"), name) == tar.extractfile(name).read()
    with pytest.raises(DataError, match=r"has no member 'nope.png'"):
        reader.read(str(tmp_path / "s.tar"), "nope.png")
    with pytest.raises(DataError, match=r"tar shard .*gone.tar does not exist"):
        reader.read(str(tmp_path / "gone.tar"), "k00.png")
