"""Errors about galleries and where they are stored; each names the problem and the fix.

They subclass :class:`~fct_registry.errors.DataError` (bad data) or
:class:`~fct_registry.errors.StorageError` (a store that cannot be used), so the CLI reports
them as ``error: ...`` with exit status 2.
"""

from __future__ import annotations

from fct_registry.errors import DataError


class GalleryError(DataError):
    """A gallery (manifest or shard) is missing, malformed or inconsistent."""


class ManifestError(GalleryError):
    """``manifest.json`` is missing, not valid JSON, or disagrees with the shards."""


class SchemaError(GalleryError):
    """A shard lacks a column, has the wrong type, or embeddings of the wrong size."""


class NonFiniteError(GalleryError):
    """Embeddings or side-info hold NaN or infinite values."""


class SideInfoError(GalleryError):
    """Side-info is missing, or was computed by another extractor than the chain reads."""


class CorruptShardError(GalleryError):
    """A shard's bytes differ from its recorded checksum, or Parquet cannot read it."""
