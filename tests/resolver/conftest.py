from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.resolver.records import Record


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised empty SQLite store, made once: creating the schema takes seconds."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()
    client.search_registered_models()
    return path


@pytest.fixture
def store(tmp_path: Path, _empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh local SQLite MLflow store, also set as MLflow's default (the flavor uses it)."""
    import mlflow

    db = tmp_path / "mlflow.db"
    shutil.copyfile(_empty_store, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)  # default artifact locations (./mlruns) land here too
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def register(uri: str, records: list[Record], aliases: dict[str, int] | None = None) -> None:
    """Create the records' versions in the store, in order (MLflow numbers them 1, 2, ...)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for rec in records:
        with contextlib.suppress(MlflowException):  # already registered
            client.create_registered_model(rec.name)
        made = client.create_model_version(rec.name, source="/nonexistent", tags=rec.tags)
        assert int(made.version) == int(rec.version), "records must be numbered 1, 2, ... per model"
    family = records[0].name
    for alias, version in (aliases or {}).items():
        client.set_registered_model_alias(family, alias, str(version))
