"""File helpers shared by the registry, galleries and reports: checksums, published modes, and
the containment rule for names read from data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fct_registry.errors import DataError

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (bounded memory for any size)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def publish_mode(path: Path) -> Path:
    """Give a temporary file (created 0600 by ``tempfile``) the mode a plain ``open`` would have
    (0666 less the umask), before it is renamed into place; shared volumes need that."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)
    return path


# --- names taken from data ---------------------------------------------------------------------


class UnsafePathError(DataError):
    """A name read from data (a manifest, a marker, a listing) would leave the root it names a
    file in: absolute, ``..``, empty, or otherwise not a plain relative name."""


_NAME_FIX = (
    "names in a gallery or image collection are plain relative paths inside it "
    "(part-00000.parquet); restore the file that holds it, or re-create it with `fct embed`"
)


def contained_name(
    name: object,
    field: str,
    *,
    where: str = "",
    fix: str = _NAME_FIX,
    folders: bool = True,
) -> str:
    """``name`` if it is a plain relative POSIX name inside a root, else :class:`UnsafePathError`.

    The one containment rule for every name that comes from data and becomes a local path or an
    S3 key: no leading ``/``, no ``..`` or ``.`` segment, no empty segment (``a//b``, a trailing
    ``/``), no backslash and no control character; with ``folders=False``, no ``/`` at all (an
    id used as a file name). Checked on the text alone, before any join, so it means the same
    for a local root and an S3 prefix (S3 keys are literal: ``a/../b`` is its own key there, and
    a local path elsewhere). ``field`` names where the name was read (``shards[0].path``).
    """
    reason = _unsafe(name, folders)
    if reason is None:
        return name  # type: ignore[return-value]  # _unsafe checked it is a str
    at = f"{where}: " if where else ""
    raise UnsafePathError(f"{at}{field} {name!r} {reason}; {fix}")


def _unsafe(name: object, folders: bool) -> str | None:
    """Why ``name`` is not a plain relative name, or None."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a name"
    if not name:
        return "is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character"
    if "\\" in name:
        return "holds a backslash (use / between folders)"
    if name.startswith("/"):
        return "is an absolute path"
    if not folders and "/" in name:
        return "holds a / where a plain name belongs"
    parts = name.split("/")
    if ".." in parts:
        return "climbs out of its root with .."
    if "." in parts:
        return "has a . segment"
    if "" in parts:
        return "has an empty segment (// or a trailing /)"
    return None
