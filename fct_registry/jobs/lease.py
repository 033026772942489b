"""An exclusive lease on a job's destination: exactly one run writes an ``--out`` at a time.

Every job that writes a gallery folder or S3 prefix holds one: ``fct upgrade``
(``_fct_upgrade.lease``), ``fct embed`` (``_fct_embed.lease``) and ``fct backfill run``
(``_fct_backfill.lease``, in the gallery it rewrites). The lease is one object beside the gallery
it guards, created only if it does not exist yet: ``O_CREAT | O_EXCL`` on a local folder, a
conditional ``PutObject`` (``If-None-Match: *``) on S3. Both are atomic, so of two runs started
together one gets the lease and the other fails at once with :class:`LeaseHeldError`, naming the
holder (host, pid, run id, since when). The holder deletes the lease when it ends, successfully
or not.

A lease whose holder was killed (``kill -9``) stays behind. When it names this host and a pid
that no longer runs, it is taken over at once: locally under an ``flock`` of the destination
folder (so two runs that both find it stale cannot both take it), on S3 by a conditional
overwrite (``If-Match`` on the stale lease's ETag). A lease of another host is never guessed
stale: the error says how to remove it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fct_registry.errors import StorageError
from fct_registry.liveness import holder_gone, pid_alive
from fct_registry.storage import LocalStorage, S3Storage, Storage


class LeaseHeldError(StorageError):
    """Another run of the same job is writing the same destination."""


def new_holder() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "run": uuid.uuid4().hex,
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


is_stale = holder_gone
"""The holder ran on this host and its process is gone (:mod:`fct_registry.liveness`)."""


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown holder (the lease is unreadable)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} (run {holder.get('run')}, "
        f"since {holder.get('since')})"
    )


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _held(dest: Storage, name: str, job: str, holder: dict[str, Any] | None) -> LeaseHeldError:
    return LeaseHeldError(
        f"another {job} is writing {dest.uri}: {describe(holder)}; wait for it to finish "
        f"(then rerun: a finished job says 'nothing to do'), or, if that run is dead on "
        f"another host, delete {dest.uri}/{name} and rerun"
    )


# --- local: O_EXCL ------------------------------------------------------------------------------


def _local_create(path: str, payload: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _local_read(path: str) -> dict[str, Any] | None:
    """The lease's holder; ``{}`` when there is no lease; None when it stays unreadable. A lease
    is created empty and then written: an empty read is retried for up to a second."""
    for _ in range(50):
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return {}
        if data:
            return _parse(data)
        time.sleep(0.02)
    return None


def _acquire_local(dest: LocalStorage, name: str, job: str, holder: dict[str, Any]) -> None:
    import fcntl  # POSIX only; the lease is a local-folder feature there

    try:
        dest.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create {dest.root}: {exc.strerror}; check the path and its permissions"
        ) from None
    path = str(dest.root / name)
    payload = json.dumps(holder).encode()
    if _local_create(path, payload):
        return
    found = _local_read(path)
    if found and not is_stale(found):
        raise _held(dest, name, job, found)
    # Stale or just released: decide under an flock of the folder, so only one taker wins.
    fd = os.open(dest.root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        found = _local_read(path)
        if found == {} or (found and is_stale(found)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if _local_create(path, payload):
                return
            found = _local_read(path)
        raise _held(dest, name, job, found)
    finally:
        os.close(fd)  # releases the flock


def _release_local(dest: LocalStorage, name: str, holder: dict[str, Any]) -> None:
    path = str(dest.root / name)
    if (_local_read(path) or {}).get("run") == holder["run"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --- S3: conditional writes -------------------------------------------------------------------


def _s3_put(dest: S3Storage, name: str, payload: bytes, **condition: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        dest.client.put_object(Bucket=dest.bucket, Key=dest._key(name), Body=payload, **condition)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return False
        raise
    return True


def _s3_read(dest: S3Storage, name: str) -> tuple[dict[str, Any] | None, str | None]:
    from botocore.exceptions import ClientError

    try:
        got = dest.client.get_object(Bucket=dest.bucket, Key=dest._key(name))
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404"):
            return {}, None
        raise
    return _parse(got["Body"].read()), got.get("ETag")


def _acquire_s3(dest: S3Storage, name: str, job: str, holder: dict[str, Any]) -> None:
    payload = json.dumps(holder).encode()
    for _ in range(3):  # a lease released between our put and our read: try again
        if dest._call(
            f"taking the lease on {dest.uri}", _s3_put, dest, name, payload, IfNoneMatch="*"
        ):
            return
        found, etag = dest._call(f"reading the lease on {dest.uri}", _s3_read, dest, name)
        if found == {}:
            continue
        if found and is_stale(found) and etag:
            if dest._call(
                f"taking over the lease on {dest.uri}", _s3_put, dest, name, payload, IfMatch=etag
            ):
                return
            found, _ = dest._call(f"reading the lease on {dest.uri}", _s3_read, dest, name)
        raise _held(dest, name, job, found)
    raise _held(dest, name, job, None)


def _release_s3(dest: S3Storage, name: str, holder: dict[str, Any]) -> None:
    found, _ = dest._call(f"reading the lease on {dest.uri}", _s3_read, dest, name)
    if (found or {}).get("run") == holder["run"]:
        dest.delete(name)


@contextlib.contextmanager
def lease(dest: Storage, name: str, job: str) -> Iterator[dict[str, Any]]:
    """Hold the lease object ``name`` of ``dest`` for the block (see the module docstring);
    yields the holder record (host, pid, run id, since). ``job`` names the job in the error a
    second run gets (``another {job} is writing ...``)."""
    holder = new_holder()
    if isinstance(dest, LocalStorage):
        _acquire_local(dest, name, job, holder)
        release = _release_local
    elif isinstance(dest, S3Storage):
        _acquire_s3(dest, name, job, holder)
        release = _release_s3
    else:  # pragma: no cover - every Storage is one of the two
        raise StorageError(f"no lease for {type(dest).__name__}")
    try:
        yield holder
    finally:
        with contextlib.suppress(StorageError, OSError):
            release(dest, name, holder)  # type: ignore[arg-type]


__all__ = ["LeaseHeldError", "describe", "is_stale", "lease", "pid_alive"]
