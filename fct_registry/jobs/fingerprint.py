"""A job's identity: the sha256 of its canonical JSON (sorted keys, compact)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def fingerprint(payload: Any) -> str:
    """Hex sha256 of ``json.dumps(payload, sort_keys=True)``: equal inputs, equal identity, so a
    rerun of the same command finds (and resumes) the same job."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
