"""A family name holding ``'`` (``o'brien``) goes into MLflow search filters as a quoted literal:
the graph, the version pages and the compatibility page work on a real SQLite store (the page
used to answer HTTP 500)."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from fct_registry.errors import FctError
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.pages import all_versions
from fct_registry.registry.query import search_versions
from fct_registry.resolver.load import load_graph

FAMILY = "o'brien"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Family ``o'brien``: embedding versions 1 and 2 and transformation 1 -> 2; and a family
    ``plain`` whose versions must never show up in ``o'brien``'s searches."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('quoted') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for family in (FAMILY, "plain"):
        client.create_registered_model(family)
        for version in (1, 2):
            tags = {
                fct_tags.ROLE: fct_tags.ROLE_EMBEDDING,
                fct_tags.FAMILY: family,
                fct_tags.EMBEDDING_DIM: "8",
            }
            client.create_model_version(family, source=f"/nowhere/{version}", tags=tags)
        client.set_model_version_tag(family, "1", fct_tags.TOP1, "50.0")
        client.set_model_version_tag(family, "2", fct_tags.TOP1, "60.0")
    name = fct_tags.transformations_model_name(FAMILY)
    client.create_registered_model(name)
    client.create_model_version(
        name,
        source="/nowhere/t",
        tags={
            fct_tags.ROLE: fct_tags.ROLE_TRANSFORMATION,
            fct_tags.FAMILY: FAMILY,
            fct_tags.SOURCE: "1",
            fct_tags.TARGET: "2",
            fct_tags.TOP1: "55.0",
            fct_tags.MEASURED_RUN: "0" * 32,  # the resolver takes only measured numbers
            fct_tags.KIND: "fct",
        },
    )
    return uri


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_quoted_literals() -> None:
    assert fct_tags.quoted("fashion") == "'fashion'"
    assert fct_tags.quoted("o'brien") == '"o\'brien"'
    with pytest.raises(FctError, match="holds both ' and \""):
        fct_tags.quoted('o\'brien "x"')


def test_searches_by_a_name_with_a_quote(store: str) -> None:
    client = _client(store)
    assert [int(mv.version) for mv in all_versions(client, FAMILY)] == [1, 2]
    assert [int(mv.version) for mv in search_versions(client, FAMILY)] == [1, 2]
    graph = load_graph(client, FAMILY)
    assert sorted(graph.nodes) == [1, 2] and len(graph.edges) == 1


def test_the_page_of_a_family_with_a_quote(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.parse import quote

    from flask import Flask

    from fct_registry.server import blueprint

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.delenv("_MLFLOW_SERVER_FILE_STORE", raising=False)
    monkeypatch.delenv("_MLFLOW_SERVER_REGISTRY_STORE", raising=False)
    app = Flask(__name__)
    app.register_blueprint(blueprint)
    web = app.test_client()
    page = web.get(f"/fct/family/{quote(FAMILY)}")
    assert page.status_code == 200, page.get_data(as_text=True)[-2000:]
    assert "o&#x27;brien" in page.get_data(as_text=True) or "o&#39;brien" in page.get_data(
        as_text=True
    )
    data = web.get(f"/fct/api/family/{quote(FAMILY)}").get_json()
    assert data["family"] == FAMILY and sorted(int(v) for v in data["versions"]) == [1, 2]
    assert FAMILY in html.unescape(web.get("/fct/").get_data(as_text=True))


def test_a_family_named_like_a_filter_does_not_match_others(tmp_path: Path, store: str) -> None:
    # Unquoted, "x' OR name = 'plain" would have matched family "plain"'s versions.
    client = _client(store)
    assert all_versions(client, "x' OR name = 'plain") == []
