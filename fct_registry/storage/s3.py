"""An S3 prefix as a :class:`~fct_registry.storage.base.Storage`, and the one boto3 client.

An object becomes visible only when its upload finishes (a single PUT, or a multipart upload's
final CompleteMultipartUpload), so a reader never sees half a file; an unfinished multipart
upload is invisible and is aborted by :meth:`S3Storage.remove_temporaries`.

boto3 uses the standard credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
profiles, instance roles) and endpoint (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, e.g. a
MinIO or moto server). :func:`s3_client` is the only place a client is made: one per process and
environment, so a store can be handed to DataLoader workers (forked or spawned) and each opens
its own connection pool. Connection attempts are short and retried a few times, so an
unreachable endpoint is reported in seconds, naming the endpoint and the variable that set it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fct_registry._files import contained_name, sha256_file
from fct_registry.errors import NotFoundError, StorageError, StorageUnreachableError
from fct_registry.scratch import scratch
from fct_registry.storage.base import Storage

ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
STORAGE_ENV = (
    *ENDPOINT_VARS,
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
"""What the storage reads from the environment. A client is built per value of these (a changed
environment gets a new client, not one holding the old credentials or endpoint); Ray forwards
them from the driver to its actors, which start with the cluster's environment."""
SHA256_METADATA = "sha256"
_KEY_FIX = (
    "S3 keys are literal, so a key with .., // or a leading / would name another file once "
    "copied to disk; rename the object, or leave it out of the prefix"
)
_CLIENTS: dict[tuple, Any] = {}


def endpoint_from_env() -> tuple[str | None, str | None]:
    """``(endpoint URL, the variable that set it)``; ``(None, None)`` for AWS's default."""
    for var in ENDPOINT_VARS:
        if os.environ.get(var):
            return os.environ[var], var
    return None, None


def s3_client() -> Any:
    """The process's boto3 S3 client for the current environment (see :data:`STORAGE_ENV`)."""
    key = (os.getpid(), *(os.environ.get(v) for v in STORAGE_ENV))
    if key not in _CLIENTS:
        import boto3  # heavy; only S3 users pay for it
        from botocore.config import Config

        config = Config(
            connect_timeout=3,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=16,
        )
        # A session of its own: boto3's default session keeps the credentials it first found.
        session = boto3.session.Session()
        _CLIENTS[key] = session.client("s3", endpoint_url=endpoint_from_env()[0], config=config)
    return _CLIENTS[key]


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix/``. Uploads are multipart above 64 MiB."""

    MULTIPART_THRESHOLD = 64 * 2**20

    def __init__(self, uri: str) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise StorageError(f"bad S3 location {uri!r}; use s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint, self.endpoint_var = endpoint_from_env()

    @property
    def client(self) -> Any:
        return s3_client()

    def _key(self, name: str) -> str:
        name = contained_name(name, "object name", where=self.uri)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _what(self, verb: str, name: str) -> str:
        return f"{verb} s3://{self.bucket}/{self._key(name)}"

    # --- errors ----------------------------------------------------------------------------

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
            return NotFoundError(
                f"{what}: no such object in {self.uri}; it was removed after it was listed, or "
                "it was never written: restore it or fix the name that points to it"
            )
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"S3 refused {what} ({code}); check the credentials and the "
                f"bucket policy for {self.uri}"
            )
        return StorageError(f"S3 {what} failed ({code or type(exc).__name__}: {exc})")

    # --- listing ---------------------------------------------------------------------------

    def _pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict]:
        """``ListObjectsV2`` pages, one at a time (1,000 keys each)."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(
                f"listing s3://{self.bucket}/{prefix}", self.client.list_objects_v2, **kwargs
            )
            yield page
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def walk(self, sub: str = "") -> Iterator[str]:
        base = self._key(sub.rstrip("/")) if sub else self.prefix
        prefix = f"{base}/" if base else ""
        cut = len(f"{self.prefix}/") if self.prefix else 0
        for page in self._pages(prefix):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):  # "folder" marker objects hold no data
                    yield contained_name(
                        obj["Key"][cut:], "object key", where=self.uri, fix=_KEY_FIX
                    )

    def children(self) -> tuple[list[str], list[str]]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        folders, files = [], []
        for page in self._pages(prefix, "/"):
            folders += [
                p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            ]
            files += [
                o["Key"][len(prefix) :] for o in page.get("Contents", []) if o["Key"] != prefix
            ]
        return sorted(folders), sorted(files)

    # --- reading ---------------------------------------------------------------------------

    def _head(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call(
                self._what("reading", name),
                self.client.head_object,
                Bucket=self.bucket,
                Key=self._key(name),
            )
        except NotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return self._head(name) is not None

    def open(self, name: str, **extra: str) -> IO[bytes]:
        """The object's streaming body (``extra``: GetObject arguments such as ``Range``)."""
        what = self._what("reading", name)
        got = self._call(
            what, self.client.get_object, Bucket=self.bucket, Key=self._key(name), **extra
        )
        return got["Body"]

    def read_bytes(self, name: str) -> bytes:
        return self._call(self._what("reading", name), self.open(name).read)

    def read_range(self, name: str, offset: int, size: int) -> bytes:
        body = self.open(name, Range=f"bytes={offset}-{offset + size - 1}")
        return self._call(self._what("reading", name), body.read)

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        with scratch("fct-s3-") as folder:
            path = folder / Path(name).name
            self._call(
                self._what("downloading", name),
                self.client.download_file,
                self.bucket,
                self._key(name),
                str(path),
            )
            yield path

    def sha256(self, name: str) -> str:
        head = self._head(name)
        if head is None:
            raise NotFoundError(f"s3://{self.bucket}/{self._key(name)} does not exist")
        recorded = head.get("Metadata", {}).get(SHA256_METADATA)
        if recorded:  # set by atomic_file from the bytes it uploaded
            return recorded
        with self.local_copy(name) as path:
            return sha256_file(path)

    # --- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def atomic_file(self, name: str) -> Iterator[Path]:
        from boto3.s3.transfer import TransferConfig

        with scratch("fct-s3-") as folder:
            path = folder / Path(name).name
            yield path
            config = TransferConfig(multipart_threshold=self.MULTIPART_THRESHOLD)
            self._call(
                self._what("uploading", name),
                self.client.upload_file,
                str(path),
                self.bucket,
                self._key(name),
                ExtraArgs={"Metadata": {SHA256_METADATA: sha256_file(path)}},
                Config=config,
            )

    def delete(self, name: str) -> None:
        self._call(
            self._what("deleting", name),
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
            gone.append(upload["Key"][len(prefix) :])
        return gone
