"""The per-family registration lock: a registered model that exists only while it is held."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fct_registry.registry import tags as T
from fct_registry.registry.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 300.0


class RegistryLockError(RegistryError):
    """Another registration held the family's lock for too long."""


@contextlib.contextmanager
def registration_lock(
    client: MlflowClient, family: str, timeout: float = LOCK_TIMEOUT_S, poll: float = 0.2
) -> Iterator[None]:
    """Hold the family's registration lock: the registered model ``F-registration-lock``.

    Creating a registered model that already exists fails atomically in every MLflow backend
    (SQLite, PostgreSQL, through a server), which makes it a mutex visible to all processes.
    """
    from mlflow.exceptions import MlflowException

    name = T.lock_model_name(family)
    holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(
                name,
                description=f"registration lock held by {holder}"
                "; delete this model if no registration is running",
            )
            break
        except MlflowException as exc:
            # RESOURCE_DOES_NOT_EXIST: the holder released it while the store was reporting the
            # conflict (it re-reads the model to word the error); busy all the same.
            if exc.error_code not in (
                "RESOURCE_ALREADY_EXISTS",
                "ALREADY_EXISTS",
                "RESOURCE_DOES_NOT_EXIST",
            ):
                raise
        if time.monotonic() > deadline:
            raise RegistryLockError(
                f"registered model {name!r} (the {family} registration lock) has existed for "
                f"over {timeout:.0f} s; if no `fct register` is running, a registration was "
                f"killed while holding it: delete it (MLflow UI, or MlflowClient()"
                f".delete_registered_model({name!r})) and rerun"
            )
        time.sleep(poll * (0.5 + random.random()))
    try:
        yield
    finally:
        try:
            client.delete_registered_model(name)
        except MlflowException as exc:  # pragma: no cover - only when someone broke the lock
            log.warning("could not release registration lock %s: %s", name, exc.message)
