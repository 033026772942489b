"""Models given from outside instead of trained here (``source:`` in params): their record.

A given version's model folder holds ``source.json`` instead of weights: the source kind, the
vectors' width and what it came from (for embedding tables: each split's URI and sha256). It is
what registration records as the version's lineage (``fct.source``) and what tells every
command that would run the model that there is none to run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fct_registry.errors import FctError

SOURCE_FILE = "source.json"


class NoModelError(FctError):
    """A command needs to run a version's model, but the version was given as embeddings."""


def canonical(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def write_given(folder: Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as the model folder's ``source.json`` (the folder holds nothing else)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SOURCE_FILE
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_given(folder: Path) -> dict[str, Any] | None:
    """The folder's ``source.json``, or ``None`` for a trained model."""
    path = Path(folder) / SOURCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def given_digest(record: Mapping[str, Any]) -> str:
    """The content hash of a given model: its kind, width and the tables' sha256 (not their
    paths: the same bytes elsewhere are the same model)."""
    content = {
        "kind": record["kind"],
        "dim": record["dim"],
        "tables": {s: t["sha256"] for s, t in sorted(record["tables"].items())},
    }
    return hashlib.sha256(canonical(content).encode()).hexdigest()


def no_model_message(what: str, source: str | None = None) -> str:
    """The one-line refusal of every command that would run ``what``'s model."""
    given = f" ({_short(source)})" if source else ""
    return (
        f"{what} was given as embeddings{given}; there is no model to run: compute its "
        "vectors with the encoder that produced the tables, write them as a gallery, and use "
        "`fct upgrade` / `fct search` (see docs/embeddings-only.md)"
    )


def _short(source: str) -> str:
    try:
        record = json.loads(source)
        return ", ".join(f"{s}: {t['uri']}" for s, t in sorted(record["tables"].items()))
    except (ValueError, KeyError, TypeError):
        return source[:200]
