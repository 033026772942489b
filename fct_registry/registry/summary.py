"""What a registration produced: each pipeline model and the registry version it maps to."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fct_registry._files import publish_mode


@dataclass(frozen=True)
class RegisteredVersion:
    """One model of the pipeline and the registry version it maps to."""

    model: str  # registered model name
    version: int
    pipeline_key: str
    content_hash: str
    created: bool  # False: an identical model was already registered
    source: int | None = None  # transformations: MLflow (family) versions of the two ends
    target: int | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


@dataclass(frozen=True)
class RegistrationSummary:
    family: str
    tracking_uri: str  # redacted
    git_commit: str
    side_info: RegisteredVersion
    embeddings: dict[str, RegisteredVersion] = field(default_factory=dict)
    transformations: dict[str, RegisteredVersion] = field(default_factory=dict)

    def all(self) -> list[RegisteredVersion]:
        return [self.side_info, *self.embeddings.values(), *self.transformations.values()]

    @property
    def created(self) -> int:
        return sum(v.created for v in self.all())

    @property
    def unchanged(self) -> int:
        return sum(not v.created for v in self.all())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(created=self.created, unchanged=self.unchanged)
        return out

    def tracked_dict(self) -> dict[str, Any]:
        """What the pipeline decided (models, versions, content hashes), for a file kept in git:
        no store URI, commit or created/unchanged counts, which differ between identical
        reproductions on different machines or reruns."""
        out = asdict(self)
        for key in ("tracking_uri", "git_commit"):
            out.pop(key)
        for group in (out["embeddings"], out["transformations"], {"": out["side_info"]}):
            for entry in group.values():
                entry.pop("created")
        return out


def write_summary(summary: RegistrationSummary, path: str | Path) -> None:
    """The DVC stage's ``outputs/registry.json``: :meth:`RegistrationSummary.tracked_dict`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as fh:
        json.dump(summary.tracked_dict(), fh, indent=2, sort_keys=True)
        fh.write("\n")
    publish_mode(Path(fh.name)).replace(path)
