"""The per-family registration lock: a registered model that exists only while it is held.

Creating a registered model that already exists fails atomically in every MLflow backend (SQLite,
PostgreSQL, through a server), which makes it a mutex visible to all processes. The holder is
recorded in the model's description (host, pid, since, expires).

A lock recovers by itself:

- its holder's pid is gone on this host (the registration was ``kill -9``-ed): taken over at once;
- it is older than its time to live (``FCT_REGISTRATION_LOCK_TTL_S``, default 120 s; the lock is
  held only while versions are created and links rewritten, seconds): taken over.

A takeover deletes the stale lock and creates a new one; it runs under a second, short-lived lock
(``<lock>-takeover``) so two waiters that both see the same stale lock cannot both take it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fct_registry.registry import tags as T
from fct_registry.registry.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 300.0
LOCK_TTL_ENV = "FCT_REGISTRATION_LOCK_TTL_S"
DEFAULT_LOCK_TTL_S = 120.0
_HELD_BY = "registration lock held by "
_BUSY = ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")


class RegistryLockError(RegistryError):
    """Another registration held the family's lock for too long."""


def lock_ttl() -> float:
    raw = os.environ.get(LOCK_TTL_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_LOCK_TTL_S
    except ValueError:
        raise RegistryError(
            f"{LOCK_TTL_ENV}={raw!r} is not a number of seconds; unset it or set e.g. 120"
        ) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_of(description: str | None) -> dict[str, Any] | None:
    """The holder recorded in a lock model's description, or None."""
    if not description or _HELD_BY not in description:
        return None
    text = description.split(_HELD_BY, 1)[1].split("; ", 1)[0]
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def stale_reason(holder: dict[str, Any] | None, now: float | None = None) -> str | None:
    """Why the lock of ``holder`` may be taken over, or None while it is live."""
    if holder is None:
        return None
    now = time.time() if now is None else now
    expires = holder.get("expires")
    if isinstance(expires, int | float) and now > expires:
        return f"expired {now - expires:.0f} s ago"
    pid = holder.get("pid")
    same_host = holder.get("host") == socket.gethostname()
    if same_host and isinstance(pid, int) and pid > 0 and not _pid_alive(pid):
        return f"its holder, pid {pid} on this host, is gone"
    return None


def _create(client: MlflowClient, name: str, ttl: float) -> bool:
    """Create the lock model; False when it exists (busy)."""
    from mlflow.exceptions import MlflowException

    now = time.time()
    holder = json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "since": now, "expires": now + ttl}
    )
    try:
        client.create_registered_model(
            name,
            description=f"{_HELD_BY}{holder}; it expires by itself, or delete this model if no "
            "registration is running",
        )
    except MlflowException as exc:
        # RESOURCE_DOES_NOT_EXIST: the holder released it while the store was reporting the
        # conflict (it re-reads the model to word the error); busy all the same.
        if exc.error_code not in (*_BUSY, "RESOURCE_DOES_NOT_EXIST"):
            raise
        return False
    return True


def _current_holder(client: MlflowClient, name: str) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    try:
        return holder_of(client.get_registered_model(name).description)
    except MlflowException:  # released meanwhile
        return None


def _delete(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client.delete_registered_model(name)


def _take_over(client: MlflowClient, name: str, ttl: float) -> bool:
    """Replace ``name`` if it is still stale; under the takeover lock. True when taken."""
    guard = f"{name}-takeover"
    if not _create(client, guard, ttl=30.0):
        if stale_reason(_current_holder(client, guard)):  # a taker killed mid-takeover
            _delete(client, guard)
        return False
    try:
        holder = _current_holder(client, name)
        reason = stale_reason(holder)
        if reason is None:
            return False
        log.warning("taking over registration lock %s: %s (was %s)", name, reason, holder)
        _delete(client, name)
        return _create(client, name, ttl)
    finally:
        _delete(client, guard)


@contextlib.contextmanager
def registration_lock(
    client: MlflowClient,
    family: str,
    timeout: float = LOCK_TIMEOUT_S,
    poll: float = 0.2,
    *,
    key: str | None = None,
    ttl: float | None = None,
) -> Iterator[None]:
    """Hold the family's registration lock, the registered model ``F-registration-lock`` (or,
    with ``key``, a narrower one: ``F-registration-lock-<key>``; see the module docstring)."""
    name = T.lock_model_name(family) + (f"-{key}" if key else "")
    ttl = lock_ttl() if ttl is None else ttl
    deadline = time.monotonic() + timeout
    while not _create(client, name, ttl):
        if _take_over(client, name, ttl):
            break
        if time.monotonic() > deadline:
            holder = _current_holder(client, name)
            raise RegistryLockError(
                f"registered model {name!r} (the {family} registration lock) was held for over "
                f"{timeout:.0f} s by {holder or 'an unknown holder'}; it expires after "
                f"{ttl:.0f} s ({LOCK_TTL_ENV}); if no `fct register` is running, delete it "
                f"(MLflow UI, or MlflowClient().delete_registered_model({name!r})) and rerun"
            )
        time.sleep(poll * (0.5 + random.random()))
    try:
        yield
    finally:
        from mlflow.exceptions import MlflowException

        try:
            client.delete_registered_model(name)
        except MlflowException as exc:  # pragma: no cover - only when someone broke the lock
            log.warning("could not release registration lock %s: %s", name, exc.message)
