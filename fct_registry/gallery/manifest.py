"""``manifest.json``: what a gallery holds, so it can be checked and planned without reading it.

Per shard: row count, sha256 and size of the file, embedding and side-info widths, and how many
rows each family version and side-info extractor contributed. An upgraded gallery adds
``provenance`` (the chains, transformation versions and the checksums of inputs and outputs).

The JSON is canonical (sorted keys, fixed layout, no timestamps), so the same gallery always
gives the same bytes: a resumed upgrade is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from fct_registry._files import UnsafePathError, contained_name
from fct_registry.errors import NotFoundError
from fct_registry.evaluation.labels import Classes, class_names
from fct_registry.gallery.errors import ManifestError
from fct_registry.storage import Storage

MANIFEST = "manifest.json"
FORMAT = "fct-gallery/1"
SHARD_SUFFIX = ".parquet"

_UNTRUSTED_FIX = (
    "a gallery names its shards by relative paths inside it (part-00000.parquet), so the "
    "manifest was altered or comes from an untrusted source: restore it, or re-index the "
    "gallery with `fct embed`"
)


GroupKey = tuple[int, str | None]
"""``(family version, side-info extractor ref or None)``: rows that one chain upgrades."""


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the gallery root
    rows: int
    sha256: str
    bytes: int
    embedding_dim: int
    side_info_dim: int | None
    groups: dict[GroupKey, int] = field(default_factory=dict)  # rows per (version, extractor)

    @property
    def versions(self) -> dict[int, int]:
        out: Counter[int] = Counter()
        for (version, _), n in self.groups.items():
            out[version] += n
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "groups": [
                {"model_version": v, "side_info_version": s, "rows": n}
                for (v, s), n in sorted(self.groups.items(), key=_group_order)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], field: str = "shard") -> ShardInfo:
        """A shard entry read from data (a manifest, a job's marker); ``field`` names it in
        errors (``shards[3]``). The path must be a plain relative name inside the gallery
        (:class:`~fct_registry._files.UnsafePathError` otherwise): it becomes a local path or
        an S3 key, and an upgrade writes its output under the same name."""
        path = contained_name(d["path"], f"{field}.path", fix=_UNTRUSTED_FIX)
        if not path.endswith(SHARD_SUFFIX):
            raise ValueError(f"{field}.path {path!r} is not a {SHARD_SUFFIX} file")
        groups = {
            (
                int(g["model_version"]),
                None if g["side_info_version"] is None else str(g["side_info_version"]),
            ): int(g["rows"])
            for g in d["groups"]
        }
        info = cls(
            path=path,
            rows=int(d["rows"]),
            sha256=str(d["sha256"]),
            bytes=int(d["bytes"]),
            embedding_dim=int(d["embedding_dim"]),
            side_info_dim=None if d.get("side_info_dim") is None else int(d["side_info_dim"]),
            groups=groups,
        )
        if info.rows < 0 or info.bytes < 0 or any(n < 0 for n in groups.values()):
            raise ValueError(f"{field} ({info.path}) records a negative row or byte count")
        if sum(groups.values()) != info.rows:
            raise ValueError(
                f"shard {info.path}: groups add up to {sum(groups.values())} rows, not {info.rows}"
            )
        return info


def _group_order(item: tuple[GroupKey, int]) -> tuple[int, str]:
    (version, side), _ = item
    return version, side or ""


@dataclass(frozen=True)
class Manifest:
    family: str
    shards: tuple[ShardInfo, ...]
    provenance: dict[str, Any] | None = None

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def versions(self) -> dict[int, int]:
        total: Counter[int] = Counter()
        for s in self.shards:
            total.update(s.versions)
        return dict(sorted(total.items()))

    @property
    def groups(self) -> dict[GroupKey, int]:
        total: Counter[GroupKey] = Counter()
        for s in self.shards:
            total.update(s.groups)
        return dict(sorted(total.items(), key=_group_order))

    @property
    def classes(self) -> Classes | None:
        """The class names the label column indexes (label ``i`` is ``classes[i]``), as the
        images' source recorded them (``provenance.source.classes``: an ImageFolder tree's
        folders, a prepared dataset's classes); upgrades and copies carry them over. None when
        nothing was recorded: the labels are bare ids."""
        prov = self.provenance if isinstance(self.provenance, dict) else {}
        source = prov.get("source")
        return class_names(
            source.get("classes") if isinstance(source, dict) else None,
            "the manifest's provenance.source.classes",
            "restore the manifest, or re-index the gallery with `fct embed`",
        )

    def shards_with(self, key: GroupKey) -> list[str]:
        return [s.path for s in self.shards if key in s.groups]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "family": self.family,
            "rows": self.rows,
            "versions": {str(k): v for k, v in self.versions.items()},
            "groups": [
                {"model_version": v, "side_info_version": s, "rows": n}
                for (v, s), n in self.groups.items()
            ],
            "shards": [s.to_dict() for s in self.shards],
        }
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT:
                raise ManifestError(
                    f"{where}: format {raw.get('format')!r} is not {FORMAT!r}; "
                    "write galleries with `fct embed`"
                )
            manifest = cls(
                family=str(raw["family"]),
                shards=tuple(
                    ShardInfo.from_dict(s, f"shards[{i}]") for i, s in enumerate(raw["shards"])
                ),
                provenance=raw.get("provenance"),
            )
            manifest._check_totals(raw, where)
        except ManifestError:
            raise
        except UnsafePathError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(
                f"{where} is not a valid gallery manifest ({type(exc).__name__}: "
                f"{exc}); restore it, or re-index the gallery with `fct embed`"
            ) from None
        names = [s.path for s in manifest.shards]
        if len(set(names)) != len(names):
            raise ManifestError(f"{where} lists a shard twice; restore it or re-index the gallery")
        return manifest

    def _check_totals(self, raw: dict[str, Any], where: str) -> None:
        """The top-level totals (what ``fct gallery info`` and planners read first) must be the
        sum of the shards: a manifest whose totals disagree was edited or damaged."""
        written = self.to_dict()
        for key in ("rows", "versions", "groups"):
            if key not in raw:
                raise ManifestError(
                    f"{where} has no {key!r} total; restore it, or re-index the gallery with "
                    "`fct embed`"
                )
            got, want = raw[key], written[key]
            if key == "groups" and isinstance(got, list):  # the same groups in any order
                got = sorted(got, key=lambda g: json.dumps(g, sort_keys=True, default=str))
                want = sorted(want, key=lambda g: json.dumps(g, sort_keys=True, default=str))
            if got != want:
                raise ManifestError(
                    f"{where}: its {key!r} total ({_short(raw[key])}) disagrees with its shards "
                    f"({_short(written[key])}); the manifest was edited or damaged: restore it, "
                    "or re-index the gallery with `fct embed`"
                )


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_manifest(storage: Storage) -> tuple[Manifest, str]:
    """The gallery's manifest and the sha256 of its bytes (what provenance records)."""
    try:
        data = storage.read_bytes(MANIFEST)
    except NotFoundError:
        raise ManifestError(
            f"{storage.uri} has no {MANIFEST}, so it is not a gallery (or its "
            "writer was interrupted); index images with `fct embed`, or finish "
            "the upgrade that writes it by rerunning `fct upgrade`"
        ) from None
    return Manifest.from_json(data, f"{storage.uri}/{MANIFEST}"), hashlib.sha256(data).hexdigest()
