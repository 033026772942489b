"""The contract every store keeps: files under one root, named by relative POSIX paths."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".fct-tmp"
"""Marks a file being written; leftovers of a killed run are removed by ``remove_temporaries``."""


class Storage(ABC):
    """Files under one root (a folder or an S3 prefix), named by ``/``-separated relative paths
    (``part-00000.parquet``, ``cat/0001.png``).

    Every name is checked with :func:`~fct_registry._files.contained_name` before it becomes a
    path or a key, and every name listed is checked before it is returned, so a name read from
    data (a manifest, a marker, an S3 key) never reaches outside the root, even if a caller forgot
    to check it where it was read. Listings come in one global order, the byte order of the
    relative paths (what S3's ``ListObjectsV2`` returns), so a folder and its copy on S3 list the
    same names in the same order.
    """

    uri: str

    # --- listing ---------------------------------------------------------------------------

    @abstractmethod
    def walk(self, sub: str = "") -> Iterator[str]:
        """Every file under ``sub`` (relative to the root), streamed in byte order of the path.
        A missing local root raises FileNotFoundError (the caller words it)."""

    def list(self) -> list[str]:
        """Every file name under the root (temporaries included); ``[]`` when there is none."""
        try:
            return list(self.walk())
        except (FileNotFoundError, NotADirectoryError):
            return []

    @abstractmethod
    def children(self) -> tuple[list[str], list[str]]:
        """``(folders, files)`` directly under the root, each sorted."""

    # --- reading ---------------------------------------------------------------------------

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, name: str) -> bytes: ...

    @abstractmethod
    def open(self, name: str) -> IO[bytes]:
        """A sequential binary stream of the file (a tar shard read once, front to back)."""

    @abstractmethod
    def read_range(self, name: str, offset: int, size: int) -> bytes: ...

    @abstractmethod
    def local_copy(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local path holding the file's bytes for the block (a download for S3)."""

    @abstractmethod
    def sha256(self, name: str) -> str:
        """The sha256 of a published file."""

    # --- writing ---------------------------------------------------------------------------

    @abstractmethod
    def atomic_file(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A local path to write; on a clean exit it is published as ``name`` in one step, on an
        exception it is discarded and ``name`` is left as it was."""

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.atomic_file(name) as tmp:
            tmp.write_bytes(data)

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name`` if it exists."""

    @abstractmethod
    def remove_temporaries(self) -> list[str]:
        """Remove what a killed writer left (temporary files, unfinished uploads)."""

    # --- naming ----------------------------------------------------------------------------

    def join(self, name: str) -> str:
        """The URI (or local path) of ``name`` under the root."""
        return f"{self.uri.rstrip('/')}/{name}"

    def contains(self, other: Storage) -> bool:
        """True when ``other``'s root is this root or inside it."""
        mine, theirs = self.uri.rstrip("/") + "/", other.uri.rstrip("/") + "/"
        return theirs.startswith(mine)

    def __str__(self) -> str:
        return self.uri
