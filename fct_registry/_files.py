"""File helpers shared by the registry, galleries and reports: checksums, published modes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

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
