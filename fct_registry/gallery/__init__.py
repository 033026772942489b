"""Galleries: embeddings of indexed items as Parquet shards plus a manifest, local or on S3.

``schema`` fixes the columns and checks batches; :mod:`fct_registry.storage` hides local
folders vs S3 prefixes (atomic publishing on both); ``manifest`` and ``shards`` are the on-disk
format; ``writer`` and ``reader`` write and stream galleries; ``embed`` indexes images with a
registered version and ``search`` answers top-k queries. Importing this package does not import
torch or mlflow.
"""

from fct_registry.errors import NotFoundError, StorageError, StorageUnreachableError
from fct_registry.gallery.errors import (
    CorruptShardError,
    GalleryError,
    ManifestError,
    NonFiniteError,
    SchemaError,
    SideInfoError,
)
from fct_registry.gallery.manifest import MANIFEST, Manifest, ShardInfo, read_manifest
from fct_registry.gallery.reader import Gallery
from fct_registry.gallery.schema import gallery_schema, make_batch
from fct_registry.gallery.search import SearchResult, search, topk_accuracy
from fct_registry.gallery.writer import GalleryWriter
from fct_registry.storage import LocalStorage, S3Storage, Storage, open_storage

__all__ = [
    "MANIFEST",
    "CorruptShardError",
    "Gallery",
    "GalleryError",
    "GalleryWriter",
    "LocalStorage",
    "Manifest",
    "ManifestError",
    "NonFiniteError",
    "NotFoundError",
    "S3Storage",
    "SchemaError",
    "SearchResult",
    "ShardInfo",
    "SideInfoError",
    "Storage",
    "StorageError",
    "StorageUnreachableError",
    "gallery_schema",
    "make_batch",
    "open_storage",
    "read_manifest",
    "search",
    "topk_accuracy",
]
