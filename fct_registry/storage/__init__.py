"""Where files live: a local folder or an S3 prefix, behind one interface, :class:`Storage`.

Image sources (``fct_registry.data``) read and list images through it; galleries
(``fct_registry.gallery``) and the jobs that write them publish shards, manifests and markers
through it. :func:`open_storage` picks the kind from the location::

    store = open_storage("s3://bucket/galleries/g")  # or a local folder
    store.write_bytes("notes/a.txt", b"hello")  # published in one step
    store.list()  # ['notes/a.txt']

What every store guarantees (see :class:`~fct_registry.storage.base.Storage`): names are plain
relative paths checked against the root (:func:`~fct_registry._files.contained_name`) where
they become a path or a key and where they are listed; listings stream in byte order; a file is
published atomically (temporary file + rename locally, a finished upload on S3); failures are
:class:`~fct_registry.errors.StorageError` (a :class:`~fct_registry.errors.DataError`) naming
the problem and the fix. boto3 is configured in one place:
:func:`~fct_registry.storage.s3.s3_client`.

Why boto3 and not fsspec/s3fs: the lease that keeps two runs off one destination
(``fct_registry.jobs.lease``) needs conditional writes, ``PutObject`` with ``If-None-Match:
*`` to take it and ``If-Match: <etag>`` to take over a dead holder's; boto3 sends both as plain
arguments and moto honours them. s3fs (2026.9) offers the first only (``mode="create"``, which it
documents as "only known to work on AWS S3") and not the second, and it caches listings, which
a resumed job must not trust. Ranged reads, streamed bodies, multipart thresholds, object
metadata (the sha256 of an upload) and aborting unfinished multipart uploads are each one boto3
call too, and boto3 is already a dependency; s3fs would add aiobotocore, whose botocore pin can
conflict with boto3's. Local folders need nothing beyond ``os``.
"""

from __future__ import annotations

import os

from fct_registry.errors import StorageError
from fct_registry.storage.base import TMP_SUFFIX, Storage
from fct_registry.storage.local import LocalStorage
from fct_registry.storage.s3 import ENDPOINT_VARS, STORAGE_ENV, S3Storage, s3_client


def open_storage(location: str | os.PathLike) -> Storage:
    """``s3://bucket/prefix`` or a local folder (created when written to)."""
    text = os.fspath(location)
    if text.startswith("s3://"):
        return S3Storage(text)
    if "://" in text:
        raise StorageError(
            f"unsupported location {text!r}; use a local folder or s3://bucket/prefix"
        )
    return LocalStorage(text)


__all__ = [
    "ENDPOINT_VARS",
    "STORAGE_ENV",
    "TMP_SUFFIX",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "open_storage",
    "s3_client",
]
