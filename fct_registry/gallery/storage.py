"""Where galleries live: a local folder or an S3 prefix, behind one small interface.

Both kinds publish a file only once it is complete, so a reader (or a resumed job) never sees half
a shard: locally a temporary file in the same folder is fsynced and renamed over the final name
(rename is atomic on one filesystem); on S3 an object becomes visible only when its upload
finishes (a single PUT, or a multipart upload's final CompleteMultipartUpload).

S3 goes through boto3 with the standard credential chain (``AWS_ACCESS_KEY_ID``/
``AWS_SECRET_ACCESS_KEY``, profiles, instance roles) and endpoint (``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, e.g. a MinIO or moto server). Connection attempts are short and retried a
few times, so an unreachable endpoint is reported in seconds, naming the endpoint and the
variable that set it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fct_registry._files import contained_name, sha256_file
from fct_registry.gallery.errors import NotFoundError, StorageError, StorageUnreachableError
from fct_registry.jobs.liveness import pid_alive

TMP_SUFFIX = ".fct-tmp"
"""Marks a file being written; leftovers of a killed run are removed by ``remove_temporaries``."""
_TMP_PID = re.compile(r"\.(\d+)-[0-9a-f]+" + re.escape(TMP_SUFFIX) + "$")
"""The writer's pid in a local temporary name (``.NAME.<pid>-<hex>.fct-tmp``)."""

ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
SHA256_METADATA = "sha256"
_CHUNK = 1 << 20


class Storage(ABC):
    """Files under one root, named by relative POSIX paths (``part-00000.parquet``).

    Every name is checked with :func:`~fct_registry._files.contained_name` before it becomes a
    path or a key, so a name read from data (a manifest, a marker) can never reach outside the
    root, even if a caller forgot to check it where it was read.
    """

    uri: str

    @abstractmethod
    def list(self) -> list[str]:
        """Every file name under the root, sorted (temporaries included)."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, name: str) -> bytes: ...

    @abstractmethod
    def local_copy(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local path holding the file's bytes for the block (a download for S3)."""

    @abstractmethod
    def atomic_file(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local path to write; on a clean exit it is published as ``name`` in one step, on an
        exception it is discarded and ``name`` is left as it was."""

    @abstractmethod
    def sha256(self, name: str) -> str:
        """The sha256 of a published file."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name`` if it exists."""

    @abstractmethod
    def remove_temporaries(self) -> list[str]:
        """Remove what a killed writer left (temporary files, unfinished uploads)."""

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.atomic_file(name) as tmp:
            tmp.write_bytes(data)

    def contains(self, other: Storage) -> bool:
        """True when ``other``'s root is this root or inside it."""
        mine, theirs = self.uri.rstrip("/") + "/", other.uri.rstrip("/") + "/"
        return theirs.startswith(mine)

    def __str__(self) -> str:
        return self.uri


def open_storage(location: str | os.PathLike, *, client: Any = None) -> Storage:
    """``s3://bucket/prefix`` or a local folder (created when written to)."""
    text = os.fspath(location)
    if text.startswith("s3://"):
        return S3Storage(text, client=client)
    if "://" in text:
        raise StorageError(
            f"unsupported location {text!r}; use a local folder or s3://bucket/prefix"
        )
    return LocalStorage(text)


# --- local -------------------------------------------------------------------------------------


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / contained_name(name, "file name", where=self.uri)

    def list(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def read_bytes(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{self._path(name)} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {self._path(name)}: {exc.strerror}") from None

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        path = self._path(name)
        if not path.is_file():
            raise NotFoundError(f"{path} does not exist")
        yield path

    @contextlib.contextmanager
    def atomic_file(self, name: str) -> Iterator[Path]:
        final = self._path(name)
        # Unique per process and call: two writers never share (or delete) a temp file.
        tmp = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create {final.parent}: {exc.strerror}; check the path and its permissions"
            ) from None
        try:
            yield tmp
            with tmp.open("rb+") as fh:  # durable before it is visible under the final name
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

    def sha256(self, name: str) -> str:
        path = self._path(name)
        if not path.is_file():
            raise NotFoundError(f"{path} does not exist")
        return sha256_file(path)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # drop folders the deletion emptied, but not the root
            parent = self._path(name).parent
            while parent != self.root and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def remove_temporaries(self) -> list[str]:
        """Remove this process's temporary files and those of writers that no longer run; a
        live writer's are left alone (it may be another run that is still writing)."""
        gone = [n for n in self.list() if n.endswith(TMP_SUFFIX) and not _live_writer(n)]
        for name in gone:
            self._path(name).unlink(missing_ok=True)
        return gone


def _live_writer(name: str) -> bool:
    """The temporary file ``name`` belongs to another process that still runs."""
    found = _TMP_PID.search(name)
    if found is None:  # no pid recorded: nobody to ask
        return False
    pid = int(found.group(1))
    return pid != os.getpid() and pid > 0 and pid_alive(pid)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere; the rename is still atomic
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- S3 ----------------------------------------------------------------------------------------


def endpoint_from_env() -> tuple[str | None, str | None]:
    """``(endpoint URL, the variable that set it)``; ``(None, None)`` for AWS's default."""
    for var in ENDPOINT_VARS:
        if os.environ.get(var):
            return os.environ[var], var
    return None, None


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix/``. Uploads are multipart above 64 MiB; an unfinished
    multipart upload is invisible and is aborted by :meth:`remove_temporaries`."""

    MULTIPART_THRESHOLD = 64 * 2**20

    def __init__(self, uri: str, *, client: Any = None) -> None:
        rest = uri.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StorageError(f"bad S3 location {uri!r}; use s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint, self.endpoint_var = endpoint_from_env()
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=3, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
            )
            self._client = boto3.client("s3", endpoint_url=self.endpoint, config=config)
        return self._client

    def _key(self, name: str) -> str:
        name = contained_name(name, "object name", where=self.uri)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _name(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one boto3 call, turning its failures into errors that say what to fix."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        try:
            return fn(*args, **kwargs)
        except (NoCredentialsError, PartialCredentialsError):
            raise StorageError(
                f"no AWS credentials for {what}; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        except ConnectionError as exc:
            raise StorageUnreachableError(self._unreachable(what, exc)) from None
        except (ClientError, S3UploadFailedError) as exc:
            raise self._client_error(what, exc) from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 {what} failed: {exc}") from None

    def _unreachable(self, what: str, exc: Exception) -> str:
        if self.endpoint:
            where = f"S3 endpoint {self.endpoint} (from {self.endpoint_var})"
            fix = f"start the server or set {self.endpoint_var} to a reachable endpoint"
        else:
            where = "AWS's default S3 endpoint"
            fix = (
                "check the network, or set AWS_ENDPOINT_URL to your S3-compatible server "
                "(e.g. http://127.0.0.1:9000)"
            )
        return f"cannot reach the {where} for {what} ({type(exc).__name__}); {fix}"

    def _client_error(self, what: str, exc: Exception) -> StorageError:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        if not code:  # S3UploadFailedError wraps the ClientError's text
            code = next((c for c in ("NoSuchBucket", "AccessDenied") if c in str(exc)), "")
        if code == "NoSuchBucket":
            return StorageError(
                f"bucket {self.bucket!r} does not exist ({what}); create it "
                f"(aws s3 mb s3://{self.bucket}) or fix the location"
            )
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFoundError(f"{what}: not found in {self.uri}")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"S3 refused {what} ({code}); check the credentials and the "
                f"bucket policy for {self.uri}"
            )
        return StorageError(f"S3 {what} failed ({code or type(exc).__name__}: {exc})")

    def list(self) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []

        def pages() -> list[Any]:
            return list(paginator.paginate(Bucket=self.bucket, Prefix=prefix))

        for page in self._call(f"listing {self.uri}", pages):
            names += [self._name(obj["Key"]) for obj in page.get("Contents", [])]
        return sorted(names)

    def _head(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call(
                f"reading {self._key(name)}",
                self.client.head_object,
                Bucket=self.bucket,
                Key=self._key(name),
            )
        except NotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def read_bytes(self, name: str) -> bytes:
        response = self._call(
            f"reading s3://{self.bucket}/{self._key(name)}",
            self.client.get_object,
            Bucket=self.bucket,
            Key=self._key(name),
        )
        return self._call(f"reading s3://{self.bucket}/{self._key(name)}", response["Body"].read)

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        folder = Path(tempfile.mkdtemp(prefix="fct-s3-"))
        try:
            path = folder / Path(name).name
            self._call(
                f"downloading s3://{self.bucket}/{self._key(name)}",
                self.client.download_file,
                self.bucket,
                self._key(name),
                str(path),
            )
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @contextlib.contextmanager
    def atomic_file(self, name: str) -> Iterator[Path]:
        from boto3.s3.transfer import TransferConfig

        folder = Path(tempfile.mkdtemp(prefix="fct-s3-"))
        try:
            path = folder / Path(name).name
            yield path
            config = TransferConfig(multipart_threshold=self.MULTIPART_THRESHOLD)
            self._call(
                f"uploading s3://{self.bucket}/{self._key(name)}",
                self.client.upload_file,
                str(path),
                self.bucket,
                self._key(name),
                ExtraArgs={"Metadata": {SHA256_METADATA: sha256_file(path)}},
                Config=config,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def sha256(self, name: str) -> str:
        head = self._head(name)
        if head is None:
            raise NotFoundError(f"s3://{self.bucket}/{self._key(name)} does not exist")
        recorded = head.get("Metadata", {}).get(SHA256_METADATA)
        if recorded:  # set by atomic_file from the bytes it uploaded
            return recorded
        with self.local_copy(name) as path:
            return sha256_file(path)

    def delete(self, name: str) -> None:
        self._call(
            f"deleting s3://{self.bucket}/{self._key(name)}",
            self.client.delete_object,
            Bucket=self.bucket,
            Key=self._key(name),
        )

    def remove_temporaries(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        found = self._call(
            f"listing uploads under {self.uri}",
            self.client.list_multipart_uploads,
            Bucket=self.bucket,
            Prefix=prefix,
        )
        gone = []
        for upload in found.get("Uploads", []):
            self._call(
                "aborting an unfinished upload",
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
            )
            gone.append(self._name(upload["Key"]))
        return gone
