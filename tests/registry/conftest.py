"""Shared fixtures: one tiny real pipeline per session, registered once into a SQLite store."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import FASHION, tiny_params
from tests.support.services import mlflow_server, moto_s3, postgres  # noqa: F401  (session fixtures)

FAMILY = "fashion"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ui: opens the MLflow UI in headless Chromium")


@dataclass(frozen=True)
class TinyPipeline:
    root: Path  # project folder: params.yaml + outputs/
    raw: dict  # params as written to params.yaml

    @property
    def params(self):
        from fct_registry.config import parse_params

        return parse_params(copy.deepcopy(self.raw))

    @property
    def layout(self):
        from fct_registry.layout import Layout

        return Layout(self.root / "outputs")

    def copy_to(self, dst: Path, **changes: object) -> TinyPipeline:
        """A copy of the project, with top-level params changed (e.g. ``family=...``)."""
        shutil.copytree(self.root, dst)
        raw = {**copy.deepcopy(self.raw), **changes}
        (dst / "params.yaml").write_text(yaml.safe_dump(raw))
        return TinyPipeline(dst, raw)


def registry_params() -> dict:
    """tiny_params() trimmed to what registration needs: three versions, two side-info edges
    forming a chain 1->2->3, and one edge without side-info; no BCT baseline."""
    raw = tiny_params(train=256, test=128)
    raw["transformations"] = {
        k: v
        for k, v in raw["transformations"].items()
        if k in ("v1_to_v2", "v2_to_v3", "v1_to_v2_no_side_info")
    }
    raw["bct"] = {}
    raw["device"] = "cpu"
    for t in raw["transformations"].values():
        t["hidden_dim"] = 16
    return raw


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> TinyPipeline:
    """The real stages on a few hundred images: models, embeddings, history, evaluation."""
    if not FASHION.is_dir():
        pytest.skip("dataset-fashion-mnist not installed (run `make setup`)")
    from fct_registry.stages.run_all import run_pipeline

    root = tmp_path_factory.mktemp("tiny-pipeline")
    pipeline = TinyPipeline(root, registry_params())
    (root / "params.yaml").write_text(yaml.safe_dump(pipeline.raw))
    params, layout = pipeline.params, pipeline.layout
    run_pipeline(params, layout)
    return pipeline


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised empty SQLite store, copied by tests: creating the schema takes seconds."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
    return path


@dataclass(frozen=True)
class Registered:
    pipeline: TinyPipeline
    uri: str
    summary: object  # RegistrationSummary


@pytest.fixture(scope="session")
def registered(
    tiny_pipeline: TinyPipeline, empty_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Registered:
    """The tiny pipeline registered once into a fresh SQLite store (artifacts beside it)."""
    from fct_registry.registry.register import register_pipeline

    folder = tmp_path_factory.mktemp("sqlite-store")
    shutil.copyfile(empty_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    summary = register_pipeline(
        tiny_pipeline.params, tiny_pipeline.layout, uri, root=tiny_pipeline.root
    )
    return Registered(tiny_pipeline, uri, summary)


@pytest.fixture
def client(registered: Registered):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=registered.uri, registry_uri=registered.uri)


@pytest.fixture
def sqlite_store(
    tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh SQLite store, also MLflow's default for the test (the flavor's fluent calls),
    with an active experiment whose artifacts stay under ``tmp_path``."""
    import mlflow

    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.MlflowClient().create_experiment(
        "flavor-tests", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    mlflow.set_experiment(experiment_id=experiment)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
