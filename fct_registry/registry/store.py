"""The one place that opens a tracking store: which URI, how it is shown, and the client on it.

Every command and library function that talks to MLflow goes through :func:`tracking_store`
(or :func:`resolve_tracking_uri` when it only needs the URI). The URI is ``--tracking-uri``,
else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``. Read-only callers pass
``read_only=True``: a SQLite store that does not exist is then an error, not a new empty
database. MLflow's default tracking and registry URIs point at the store for the block only and
are restored through MLflow's public API afterwards (the flavor downloads ``models:/`` through
them).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fct_registry.registry import tags as T
from fct_registry.registry.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
_NO_URL_PRINTING = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
_NO_PROGRESS_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_REGISTRY_ENV = "MLFLOW_REGISTRY_URI"


class NoTrackingStoreError(RegistryError):
    """A read-only command found no tracking store to read."""


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_SECRET_QUERY = re.compile(r"(?i)((?:password|passwd|pwd|secret|token|key)[^=&\s]*=)[^&\s]*")


def redact_uri(text: str) -> str:
    """``text`` with URI user-info (``user:password@``) and secret query values removed."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\g<scheme>", text))


def resolve_tracking_uri(tracking_uri: str | None = None, root: str | Path | None = None) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``."""
    if tracking_uri:
        return tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(root or Path.cwd()) / DEFAULT_DB).resolve()}"


def default_artifact_location(tracking_uri: str, family: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite database (``mlartifacts/``);
    a server or other database decides for itself (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if not db.is_absolute():  # sqlite:///relative.db is relative to the working directory
        db = Path.cwd() / db
    return (db.parent / ARTIFACTS_DIR / T.experiment_name(family)).resolve().as_uri()


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (MLflow's can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return path if path.is_absolute() else Path.cwd() / path


def check_readable(uri: str) -> str:
    """``uri``, unless it names a SQLite file that does not exist (reading would create it)."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise NoTrackingStoreError(
            f"no tracking store at {redact_uri(uri)} ({db} does not exist); pass "
            "--tracking-uri URI or set MLFLOW_TRACKING_URI to the registry to read (run from the "
            "project folder to use its mlflow.db)"
        )
    return uri


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block, then restore the caller's setting
    (including ``$MLFLOW_TRACKING_URI``, which MLflow's own helper would unset). MLflow's
    "View run at <url>" lines are suppressed: the URL could carry user-info."""
    from mlflow.tracking._tracking_service import utils

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", _NO_URL_PRINTING)}
    os.environ[_NO_URL_PRINTING] = "true"
    try:
        with utils._use_tracking_uri(uri):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def tracking_store(
    tracking_uri: str | None = None,
    *,
    root: str | Path | None = None,
    read_only: bool = False,
) -> Iterator[MlflowClient]:
    """An ``MlflowClient`` on the resolved store, with MLflow's default tracking and registry
    URIs pointing at it for the block and the caller's settings restored afterwards."""
    import mlflow  # heavy: only once a store is really opened

    uri = resolve_tracking_uri(tracking_uri, root)
    if read_only:
        check_readable(uri)
    saved_env = {k: os.environ.get(k) for k in (_REGISTRY_ENV, _NO_PROGRESS_BARS)}
    # Artifact-download progress bars would interleave with reports on stderr.
    os.environ.setdefault(_NO_PROGRESS_BARS, "false")
    # A registry URI set explicitly elsewhere differs from the tracking URI; an unset one
    # follows the tracking URI, so only an explicit one has to be swapped and restored.
    explicit = mlflow.get_registry_uri() != mlflow.get_tracking_uri()
    saved_registry = mlflow.get_registry_uri() if explicit else None
    with use_tracking_uri(uri):
        if explicit:
            mlflow.set_registry_uri(uri)
        try:
            yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        finally:
            if saved_registry is not None:
                mlflow.set_registry_uri(saved_registry)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def open_tracking_store(
    tracking_uri: str | None = None, *, read_only: bool = False
) -> MlflowClient:
    """:func:`tracking_store` for a command-line process: the store stays current until the
    process exits (a command runs one store from start to end)."""
    stack = contextlib.ExitStack()
    client = stack.enter_context(tracking_store(tracking_uri, read_only=read_only))
    atexit.register(stack.close)
    return client
