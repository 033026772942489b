"""Stage checkpoints' fingerprints and the stages' small JSON outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def fingerprint(config: object, seed: int, inputs: list[Path]) -> str:
    """Hash of a stage's config, seed and input files: a checkpoint resumes only on a match."""
    digest = hashlib.sha256(json.dumps([config, seed], sort_keys=True, default=str).encode())
    for path in inputs:
        with path.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
