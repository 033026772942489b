"""A local folder as a :class:`~fct_registry.storage.base.Storage`.

A file is published by writing a temporary file in the same folder, fsyncing it and renaming it
over the final name (rename is atomic on one filesystem), so a reader never sees half a file.
Listing holds one directory's names at a time and names a symbolic link loop instead of
following it.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from fct_registry._files import contained_name, sha256_file
from fct_registry.errors import NotFoundError, StorageError
from fct_registry.liveness import pid_alive
from fct_registry.storage.base import TMP_SUFFIX, Storage

_TMP_PID = re.compile(r"\.(\d+)-[0-9a-f]+" + re.escape(TMP_SUFFIX) + "$")
"""The writer's pid in a local temporary name (``.NAME.<pid>-<hex>.fct-tmp``)."""


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike) -> None:
        # Resolved: two spellings of one folder (a link, ``..``) are one root for ``contains``.
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        self._prefix = self.uri.rstrip("/") + "/"

    def _path(self, name: str) -> Path:
        return self.root / contained_name(name, "file name", where=self.uri)

    # --- listing ---------------------------------------------------------------------------

    def walk(self, sub: str = "") -> Iterator[str]:
        sub = sub.rstrip("/")
        folder = self._path(sub) if sub else self.root
        yield from _walk(folder, f"{sub}/" if sub else "")  # scandir names: no .., no leading /

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

    # --- reading ---------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def read_bytes(self, name: str) -> bytes:
        # str, not Path: pathlib's parsing costs ~10% per image
        path = self._prefix + contained_name(name, "file name", where=self.uri)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise NotFoundError(
                f"{path} does not exist (removed after it was listed, or a broken link); "
                "restore it, or remove what names it"
            ) from None
        except PermissionError:
            raise StorageError(
                f"cannot read {path}: permission denied; fix its permissions "
                "(chmod a+r) or remove it"
            ) from None
        except OSError as exc:
            raise StorageError(
                f"cannot read {path}: {exc.strerror or exc}; check the file"
            ) from None

    def open(self, name: str) -> IO[bytes]:
        path = self._path(name)
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"cannot open {path}: {exc.strerror}") from None
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc.strerror or exc}") from None

    def read_range(self, name: str, offset: int, size: int) -> bytes:
        with self.open(name) as fh:
            fh.seek(offset)
            return fh.read(size)

    @contextlib.contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        path = self._path(name)
        if not path.is_file():
            raise NotFoundError(f"{path} does not exist")
        yield path

    def sha256(self, name: str) -> str:
        path = self._path(name)
        if not path.is_file():
            raise NotFoundError(f"{path} does not exist")
        return sha256_file(path)

    # --- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def atomic_file(self, name: str) -> Iterator[Path]:
        final = self._path(name)
        # Unique per process and call: two writers never share (or delete) a temp file.
        tmp = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        make_folder(final.parent)
        try:
            yield tmp
            with tmp.open("rb+") as fh:  # durable before it is visible under the final name
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)

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

    def join(self, name: str) -> str:
        return str(self.root / name)


def make_folder(path: Path) -> None:
    """Create ``path`` and its parents; a StorageError that says what to check if it cannot."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create {path}: {exc.strerror}; check the path and its permissions"
        ) from None


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


def _walk(folder: Path, prefix: str, above: frozenset | None = None) -> Iterator[str]:
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
                raise StorageError(
                    f"{folder / name} links back to a folder above it (a symbolic link loop); "
                    "remove the link or point it outside the collection"
                )
            yield from _walk(folder / name, f"{prefix}{name}/", above)
        else:
            yield prefix + name


def _unlistable(folder: Path, exc: OSError) -> StorageError:
    # A link to itself or round a loop (ELOOP), a folder without permission, ...
    return StorageError(
        f"cannot list {exc.filename or folder}: {exc.strerror or exc}; remove or fix that entry "
        "(a symbolic link must point to an existing file or folder)"
    )


def _inode(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino
