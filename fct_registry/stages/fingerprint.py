"""Stage checkpoints' fingerprints and the stages' small JSON outputs."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

# First-party code: what a stage's DVC deps list (scripts/stage_deps.py traces the same modules).
CODE_PACKAGES = ("fct_registry", "pipelines")


def code_digest() -> str:
    """sha256 of the first-party source files this process has imported, by module name.

    A stage imports its code at module level (tests/test_layers.py), so by the time it
    fingerprints a checkpoint this is the code it runs: the files of its DVC ``deps``."""
    digest = hashlib.sha256()
    for name in sorted(sys.modules):
        file = getattr(sys.modules[name], "__file__", None)
        if name.split(".")[0] in CODE_PACKAGES and file and file.endswith(".py"):
            digest.update(name.encode() + b"\0" + Path(file).read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(config: object, seed: int, inputs: list[Path]) -> str:
    """Hash of a stage's config, seed, input files and code: a checkpoint resumes only on a
    match. Code is part of it because DVC reruns a stage when its code changes, and resuming a
    finished checkpoint would then hand back the old code's model as the new one's."""
    digest = hashlib.sha256(json.dumps([config, seed], sort_keys=True, default=str).encode())
    digest.update(code_digest().encode())
    for path in inputs:
        with path.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
