"""The per-family registration lock: a registered model that exists only while it is held.

Creating a registered model that already exists fails atomically in every MLflow backend (SQLite,
PostgreSQL, through a server), which makes it a mutex visible to all processes. The holder is
recorded in the model's description (host, pid, since, expires).

While the holder works, a heartbeat thread renews the lock every third of its time to live, so a
registration that takes longer than the TTL (logging a large model) keeps it. A lock recovers by
itself:

- its holder's pid is gone on this host (the registration was ``kill -9``-ed): taken over at once;
- it was not renewed within its time to live (``FCT_REGISTRATION_LOCK_TTL_S``, default 120 s):
  its holder is hung, or died on another host; taken over.

A takeover deletes the stale lock and creates a new one; it runs under a second, short-lived lock
(``<lock>-takeover``) so two waiters that both see the same stale lock cannot both take it. A
holder records the MLflow run it logs into (:meth:`Lock.record_run`); whoever takes over a dead
holder's lock marks that run FAILED, so a killed registration does not leave it RUNNING forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fct_registry.liveness import holder_gone
from fct_registry.registry import tags as fct_tags
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
    if holder_gone(holder):
        return f"its holder, pid {holder['pid']} on this host, is gone"
    return None


def _description(holder: dict[str, Any]) -> str:
    return (
        f"{_HELD_BY}{json.dumps(holder)}; it expires by itself, or delete this model if no "
        "registration is running"
    )


def _create(client: MlflowClient, name: str, ttl: float) -> dict[str, Any] | None:
    """Create the lock model; its holder record, or None when it exists (busy)."""
    from mlflow.exceptions import MlflowException

    now = time.time()
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": now,
        "expires": now + ttl,
        "token": uuid.uuid4().hex,  # tells this holder from a later one in the same process
    }
    try:
        client.create_registered_model(name, description=_description(holder))
    except MlflowException as exc:
        # RESOURCE_DOES_NOT_EXIST: the holder released it while the store was reporting the
        # conflict (it re-reads the model to word the error); busy all the same.
        if exc.error_code not in (*_BUSY, "RESOURCE_DOES_NOT_EXIST"):
            raise
        return None
    return holder


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


def _fail_run(client: MlflowClient, holder: dict[str, Any]) -> None:
    """Mark the run a dead holder was logging FAILED (it would stay RUNNING forever)."""
    from mlflow.exceptions import MlflowException

    run_id = holder.get("run_id")
    if not isinstance(run_id, str):
        return
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="FAILED")
            log.warning("marked run %s FAILED: its registration stopped holding the lock", run_id)
    except MlflowException as exc:  # deleted meanwhile: nothing to mark
        log.warning("could not mark run %s FAILED: %s", run_id, exc.message)


def _take_over(client: MlflowClient, name: str, ttl: float) -> dict[str, Any] | None:
    """Replace ``name`` if it is still stale, under the takeover lock; the new holder record,
    or None when not taken."""
    guard = f"{name}-takeover"
    if _create(client, guard, ttl=30.0) is None:
        if stale_reason(_current_holder(client, guard)):  # a taker killed mid-takeover
            _delete(client, guard)
        return None
    try:
        holder = _current_holder(client, name)
        reason = stale_reason(holder)
        if reason is None or holder is None:
            return None
        log.warning("taking over registration lock %s: %s (was %s)", name, reason, holder)
        _fail_run(client, holder)
        _delete(client, name)
        return _create(client, name, ttl)
    finally:
        _delete(client, guard)


class Lock:
    """A held lock: renewed by a heartbeat thread every ``ttl / 3`` until :meth:`stop`."""

    def __init__(self, client: MlflowClient, name: str, holder: dict[str, Any], ttl: float):
        self.client, self.name, self.holder, self.ttl = client, name, holder, ttl
        self._write = threading.Lock()  # one description update at a time (heartbeat, run id)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"{name}-heartbeat", daemon=True)
        self._thread.start()

    def record_run(self, run_id: str) -> None:
        """The MLflow run this holder logs into: failed by whoever takes over if it dies."""
        self.holder["run_id"] = run_id
        self.renew()

    def renew(self) -> bool:
        """Push the expiry ``ttl`` seconds ahead; False when the lock is no longer ours (it was
        taken over after all): then it is never written over."""
        from mlflow.exceptions import MlflowException

        with self._write:
            if self._stopped.is_set():
                return False
            current = _current_holder(self.client, self.name)
            if current is None or current.get("token") != self.holder["token"]:
                log.warning(
                    "registration lock %s was taken over: it was not renewed within %.0f s "
                    "(%s); this registration goes on without it",
                    self.name,
                    self.ttl,
                    LOCK_TTL_ENV,
                )
                self._stopped.set()  # never renew (or delete) another holder's lock
                return False
            self.holder["expires"] = time.time() + self.ttl
            try:
                self.client.update_registered_model(
                    self.name, description=_description(self.holder)
                )
            except MlflowException as exc:  # a busy store: the next beat retries
                log.warning("could not renew registration lock %s: %s", self.name, exc.message)
                return False
            return True

    def _beat(self) -> None:
        while not self._stopped.wait(self.ttl / 3):
            try:
                self.renew()
            except Exception as exc:  # never let the thread die silently: retry next beat
                log.warning("could not renew registration lock %s: %s", self.name, exc)

    def stop(self) -> None:
        with self._write:
            self._stopped.set()
        self._thread.join()


@contextlib.contextmanager
def registration_lock(
    client: MlflowClient,
    family: str,
    timeout: float = LOCK_TIMEOUT_S,
    poll: float = 0.2,
    *,
    key: str | None = None,
    ttl: float | None = None,
) -> Iterator[Lock]:
    """Hold the family's registration lock, the registered model ``F-registration-lock`` (or,
    with ``key``, a narrower one: ``F-registration-lock-<key>``; see the module docstring)."""
    name = fct_tags.lock_model_name(family) + (f"-{key}" if key else "")
    ttl = lock_ttl() if ttl is None else ttl
    deadline = time.monotonic() + timeout
    while (holder := _create(client, name, ttl) or _take_over(client, name, ttl)) is None:
        if time.monotonic() > deadline:
            current = _current_holder(client, name)
            raise RegistryLockError(
                f"registered model {name!r} (the {family} registration lock) was held for over "
                f"{timeout:.0f} s by {current or 'an unknown holder'}; it expires "
                f"{ttl:.0f} s after its holder stops renewing it ({LOCK_TTL_ENV}); if no "
                f"`fct register` is running, delete it (MLflow UI, or "
                f"MlflowClient().delete_registered_model({name!r})) and rerun"
            )
        time.sleep(poll * (0.5 + random.random()))
    lock = Lock(client, name, holder, ttl)
    try:
        yield lock
    finally:
        from mlflow.exceptions import MlflowException

        lock.stop()
        current = _current_holder(client, name)
        try:
            if current is None or current.get("token") == holder["token"]:  # never another's
                client.delete_registered_model(name)
        except MlflowException as exc:  # pragma: no cover - only when someone broke the lock
            log.warning("could not release registration lock %s: %s", name, exc.message)
