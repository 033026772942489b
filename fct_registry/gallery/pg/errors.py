"""What goes wrong with a PostgreSQL gallery store; every message names the fix."""

from __future__ import annotations

from fct_registry.errors import StorageError, StorageUnreachableError


class PgError(StorageError):
    """A PostgreSQL server that cannot be used as a gallery store (message names the fix)."""


class PgAuthError(PgError):
    """The server refused the URL's credentials."""


class PgUnreachableError(PgError, StorageUnreachableError):
    """No server answers at the URL's host, port or socket."""


class PgvectorMissingError(PgError):
    """The server has no pgvector extension (``CREATE EXTENSION vector`` fails)."""


class GalleryBusyError(PgError):
    """Another job holds the gallery's advisory lock."""
