"""User-facing errors: each names the problem and the fix; the CLI prints them and exits 2.

Each layer raises the errors of its own ``errors`` module, whose main class is named after the
layer: ``FctError`` here (with ``ConfigError`` and ``DataError``), ``RegistryError``
(``fct_registry.registry.errors``), ``ResolverError`` (``fct_registry.resolver.errors``),
``GalleryError`` and ``StorageError`` (``fct_registry.gallery.errors``), ``PgError``
(``fct_registry.gallery.pg.errors``) and ``GateError`` (``fct_registry.gate.errors``). All are
``FctError`` subclasses, so the CLI reports every one as ``error: <one line>`` with exit 2.
"""

from __future__ import annotations


class FctError(Exception):
    """An error caused by input or configuration, not by a bug.

    The message must say what is wrong and how to fix it, e.g.
    ``unknown backbone 'resnet19'; known: resnet18, resnet50, smallcnn``.
    """


class ConfigError(FctError):
    """params.yaml (or a CLI override) is invalid."""


class DataError(FctError):
    """A dataset or embedding file is missing, malformed or inconsistent."""


class StorageError(DataError):
    """A local folder or S3 prefix cannot be read or written (a gallery's or images' store)."""


class StorageUnreachableError(StorageError):
    """The S3 endpoint does not answer."""


class NotFoundError(StorageError):
    """An object or file that should exist does not."""
