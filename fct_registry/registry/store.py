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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fct_registry._redact import first_line, redact
from fct_registry.registry import tags as fct_tags
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


def redact_uri(text: str) -> str:
    """``text`` with URI user-info (``user:password@``) and secret query values removed
    (:func:`fct_registry._redact.redact`, the one scrubber)."""
    return redact(text)


def normalize_uri(uri: str) -> str:
    """``postgresql://`` as users write it, with the driver that is installed (psycopg2):
    SQLAlchemy's bare ``postgresql://`` picks psycopg v3, which MLflow does not depend on."""
    for bare in ("postgresql://", "postgres://"):
        if uri.startswith(bare):
            return "postgresql+psycopg2://" + uri.removeprefix(bare)
    return uri


def resolve_tracking_uri(tracking_uri: str | None = None, root: str | Path | None = None) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``
    (normalised by :func:`normalize_uri`)."""
    if tracking_uri:
        return normalize_uri(tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return normalize_uri(os.environ["MLFLOW_TRACKING_URI"])
    return f"sqlite:///{(Path(root or Path.cwd()) / DEFAULT_DB).resolve()}"


def _initialise(uri: str) -> None:
    """Open tracking and registry stores on ``uri`` once: MLflow creates (migrates) the schema
    and the default experiment on first use."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)


def ensure_schema(uri: str) -> None:
    """Create a brand-new database store's schema exactly once, before any worker uses it.

    MLflow migrates an empty database on first use; processes that start on the same new store
    at once race in those migrations and crash. A new SQLite file is built under an ``flock``
    of its folder at a temporary path and renamed into place, so it appears complete or not at
    all; a PostgreSQL database is initialised under a session advisory lock. Other stores
    (servers) create their own schema.
    """
    db = sqlite_path(uri)
    if db is not None:
        if db.is_file():
            return
        import fcntl  # POSIX only

        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(db.parent, os.O_RDONLY)
        except OSError as exc:
            raise RegistryError(
                f"cannot create the tracking store {db}: {exc.strerror}; check the folder "
                "and its permissions"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if db.is_file():  # another process created it while this one waited
                return
            tmp = db.with_name(f".{db.name}.{os.getpid()}.init")
            tmp.unlink(missing_ok=True)
            try:
                _initialise(f"sqlite:///{tmp}")
                os.replace(tmp, db)
            finally:
                tmp.unlink(missing_ok=True)
        finally:
            os.close(fd)
        return
    if uri.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                # a fixed key: "fct schema init" (any 64-bit number, the same in every process)
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(7716071001)"))
                try:
                    _initialise(uri)
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(7716071001)"))
        finally:
            engine.dispose()


def default_artifact_location(tracking_uri: str, family: str) -> str | None:
    """Where a new experiment keeps artifacts: beside a SQLite database (``mlartifacts/``);
    a server or other database decides for itself (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    if not db.is_absolute():  # sqlite:///relative.db is relative to the working directory
        db = Path.cwd() / db
    return (db.parent / ARTIFACTS_DIR / fct_tags.experiment_name(family)).resolve().as_uri()


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
    else:
        try:
            ensure_schema(uri)
        except RegistryError:
            raise
        except Exception as exc:  # the driver's text may carry the URI with its password
            raise RegistryError(
                f"cannot use the tracking store {redact(uri)} ({first_line(exc)[:300]}); start "
                "it or pass --tracking-uri / set MLFLOW_TRACKING_URI"
            ) from None
    saved_env = {k: os.environ.get(k) for k in (_REGISTRY_ENV, _NO_PROGRESS_BARS)}
    # Artifact-download progress bars would interleave with reports on stderr.
    os.environ.setdefault(_NO_PROGRESS_BARS, "false")
    # The registry follows the store for the block, whatever pointed it elsewhere before (an
    # explicit registry URI, or $MLFLOW_REGISTRY_URI, which would otherwise win over it).
    explicit = mlflow.get_registry_uri() != mlflow.get_tracking_uri()
    saved_registry = mlflow.get_registry_uri() if explicit else None
    with use_tracking_uri(uri):
        os.environ[_REGISTRY_ENV] = uri
        mlflow.set_registry_uri(uri)
        try:
            yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        finally:
            mlflow.set_registry_uri(saved_registry)  # None: follow the tracking URI again
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


# Stores opened by a command (``open_tracking_store``); closed when the command returns, so a
# command run in-process (tests, notebooks) leaves MLflow's settings as it found them.
_COMMAND_STORES = contextlib.ExitStack()
atexit.register(_COMMAND_STORES.close)


def open_tracking_store(
    tracking_uri: str | None = None, *, read_only: bool = False
) -> MlflowClient:
    """:func:`tracking_store` for a command: the store stays current until the command ends
    (:func:`close_command_stores`, called by ``fct``'s ``main``) or the process exits."""
    return _COMMAND_STORES.enter_context(tracking_store(tracking_uri, read_only=read_only))


def close_command_stores() -> None:
    """Leave every store :func:`open_tracking_store` opened, restoring MLflow's settings."""
    _COMMAND_STORES.close()
