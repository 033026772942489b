"""Where image files live: a local folder or an S3 prefix, behind one small interface.

Listings are streamed in one global order, the byte order of the relative paths (what S3's
``ListObjectsV2`` returns), so a folder and its copy on S3 give the same items in the same
order. Locally, one directory's names are held at a time; on S3, one page of 1,000 keys.
Every name read or listed is a plain relative name inside the root
(:func:`~fct_registry._files.contained_name`): a name from data (an image manifest's row, an S3
key) never reaches a file outside the location.
S3 clients are created lazily, once per process, so a location can be handed to DataLoader
workers (forked or spawned) and each worker opens its own connection pool.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fct_registry._files import contained_name
from fct_registry.errors import DataError

ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_FIX = (
    "images are named by plain relative paths inside their folder or prefix; rename the file, "
    "or name it by its absolute path or s3:// URI in an image manifest"
)


class Location(ABC):
    """A root (folder or S3 prefix) holding files named by ``/``-separated relative paths."""

    uri: str

    @abstractmethod
    def walk(self, sub: str = "") -> Iterator[str]:
        """Every file under ``sub`` (relative to the root), in byte order of the path."""

    @abstractmethod
    def children(self) -> tuple[list[str], list[str]]:
        """``(folders, files)`` directly under the root, each sorted."""

    @abstractmethod
    def read(self, name: str) -> bytes: ...

    @abstractmethod
    def open(self, name: str) -> IO[bytes]:
        """A sequential binary stream of the file (a tar shard read once, front to back)."""

    @abstractmethod
    def read_range(self, name: str, offset: int, size: int) -> bytes: ...

    def join(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"


def open_location(uri: str) -> Location:
    if uri.startswith("s3://"):
        return S3Location(uri)
    if "://" in uri:
        raise DataError(
            f"unsupported image location {uri!r}; use a local path or s3://bucket/prefix"
        )
    return LocalLocation(Path(uri))


# --- local -------------------------------------------------------------------------------------


class LocalLocation(Location):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)
        self._prefix = self.uri.rstrip("/") + "/"

    def walk(self, sub: str = "") -> Iterator[str]:
        sub = sub.rstrip("/")
        folder = (
            self.root / contained_name(sub, "folder", where=self.uri, fix=_FIX)
            if sub
            else self.root
        )
        prefix = f"{sub.rstrip('/')}/" if sub else ""
        yield from _walk_local(folder, prefix)  # names from scandir: no .., no leading /

    def children(self) -> tuple[list[str], list[str]]:
        folders, files = [], []
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    (folders if entry.is_dir() else files).append(entry.name)
        except (FileNotFoundError, NotADirectoryError):
            raise  # the caller words these (the path is wrong, not an entry in it)
        except OSError as exc:
            raise _unlistable(self.root, exc) from None
        return sorted(folders), sorted(files)

    def read(self, name: str) -> bytes:
        # str, not Path: pathlib's parsing costs ~10% per image
        path = self._prefix + contained_name(name, "file name", where=self.uri, fix=_FIX)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise DataError(
                f"{path} does not exist (removed after it was listed, or a broken link); "
                "restore it or remove it from the collection"
            ) from None
        except PermissionError:
            raise DataError(
                f"cannot read {path}: permission denied; fix its permissions "
                "(chmod a+r) or remove it"
            ) from None
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}; check the file") from None

    def open(self, name: str) -> IO[bytes]:
        contained_name(name, "file name", where=self.uri, fix=_FIX)
        try:
            return (self.root / name).open("rb")
        except OSError as exc:
            raise DataError(f"cannot open {self.root / name}: {exc.strerror or exc}") from None

    def read_range(self, name: str, offset: int, size: int) -> bytes:
        with self.open(name) as fh:
            fh.seek(offset)
            return fh.read(size)

    def join(self, name: str) -> str:
        return str(self.root / name)


def _walk_local(folder: Path, prefix: str, above: frozenset | None = None) -> Iterator[str]:
    # Sorting "name/" for folders gives the byte order of full paths, i.e. S3's order.
    # ``above``: (device, inode) of the folders above, so a link back up is named, not followed.
    try:
        with os.scandir(folder) as it:
            entries = sorted((e.name + "/" if e.is_dir() else e.name, e.name) for e in it)
        if above is None:
            above = frozenset(_inode(p) for p in folder.resolve().parents)
        here = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        raise  # the caller words these (the path is wrong, not an entry in it)
    except OSError as exc:
        raise _unlistable(folder, exc) from None
    above = above | {(here.st_dev, here.st_ino)}
    for key, name in entries:
        if key.endswith("/"):
            if _inode(folder / name) in above:
                raise DataError(
                    f"{folder / name} links back to a folder above it (a symbolic link loop); "
                    "remove the link or point it outside the collection"
                )
            yield from _walk_local(folder / name, f"{prefix}{name}/", above)
        else:
            yield prefix + name


def _unlistable(folder: Path, exc: OSError) -> DataError:
    # A link to itself or round a loop (ELOOP), a folder without permission, ...
    return DataError(
        f"cannot list {exc.filename or folder}: {exc.strerror or exc}; remove or fix that entry "
        "(a symbolic link must point to an existing file or folder)"
    )


def _inode(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


# --- S3 ----------------------------------------------------------------------------------------

_CLIENTS: dict[tuple[int, str | None], Any] = {}
_KEY_FIX = (
    "S3 keys are literal, so a key with .., // or a leading / would name another file once "
    "copied to disk; rename the object, or leave it out of the prefix"
)


def s3_client() -> Any:
    """One boto3 client per process (and endpoint); AWS_ENDPOINT_URL(_S3) is honoured."""
    endpoint = next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
    key = (os.getpid(), endpoint)
    if key not in _CLIENTS:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=3,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=16,
        )
        _CLIENTS[key] = boto3.client("s3", endpoint_url=endpoint, config=config)
    return _CLIENTS[key]


class S3Location(Location):
    def __init__(self, uri: str) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise DataError(f"bad S3 location {uri!r}; use s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, name: str) -> str:
        name = contained_name(name, "object name", where=self.uri, fix=_FIX)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            return fn(**kwargs)
        except (NoCredentialsError, PartialCredentialsError):
            raise DataError(
                f"no AWS credentials for {what}; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        except BotoConnectionError as exc:
            endpoint = next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
            where = f"S3 endpoint {endpoint}" if endpoint else "AWS's default S3 endpoint"
            raise DataError(
                f"cannot reach the {where} for {what} ({type(exc).__name__}); start the "
                "server, or set AWS_ENDPOINT_URL to a reachable S3-compatible endpoint"
            ) from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                raise DataError(
                    f"bucket {self.bucket!r} does not exist ({what}); fix the location "
                    f"or create it (aws s3 mb s3://{self.bucket})"
                ) from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise DataError(
                    f"{what}: no such object; it was removed after it was listed, or the "
                    "manifest names a key that does not exist: fix the path or restore it"
                ) from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise DataError(
                    f"S3 refused {what} ({code}); check the credentials and the bucket "
                    f"policy for {self.uri}"
                ) from None
            raise DataError(f"S3 {what} failed ({code}: {exc})") from None
        except BotoCoreError as exc:
            raise DataError(f"S3 {what} failed: {exc}") from None

    def _pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(
                f"listing s3://{self.bucket}/{prefix}", s3_client().list_objects_v2, **kwargs
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

    def read(self, name: str) -> bytes:
        what = f"reading s3://{self.bucket}/{self._key(name)}"
        body = self._call(what, s3_client().get_object, Bucket=self.bucket, Key=self._key(name))
        return self._call(what, body["Body"].read)

    def open(self, name: str) -> IO[bytes]:
        what = f"reading s3://{self.bucket}/{self._key(name)}"
        return self._call(what, s3_client().get_object, Bucket=self.bucket, Key=self._key(name))[
            "Body"
        ]

    def read_range(self, name: str, offset: int, size: int) -> bytes:
        what = f"reading s3://{self.bucket}/{self._key(name)}"
        body = self._call(
            what,
            s3_client().get_object,
            Bucket=self.bucket,
            Key=self._key(name),
            Range=f"bytes={offset}-{offset + size - 1}",
        )
        return self._call(what, body["Body"].read)
