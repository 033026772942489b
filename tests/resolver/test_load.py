"""Reading the graph from a real (local SQLite) MLflow registry, and what that costs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from fct_registry.registry.refs import parse_ref
from fct_registry.resolver import UnknownFamilyError, load_graph, resolve
from tests.resolver.conftest import register
from tests.resolver.records import FAMILY, chain, default_family, emb, tr


def test_round_trip_through_the_registry(store: str) -> None:
    records = [*default_family(direct=70.0), chain(5, [1, 2], 1, 3, 82.0)]
    register(store, records, aliases={"production": 3})
    graph = load_graph(MlflowClient(), FAMILY)
    assert list(graph.nodes) == [1, 2, 3]
    assert [e.model_version for e in graph.edges] == [1, 2, 3, 4]
    assert [c.hops for c in graph.chains] == [(1, 2)]
    assert graph.aliases == {"production": 3} and graph.side_info_versions == [1]
    stats = graph.load_stats
    assert stats is not None
    assert (stats.calls, stats.pages, stats.versions) == (2, 1, len(records))
    got = resolve(graph, parse_ref("fashion@1"), parse_ref("fashion@production"))
    assert got.chosen is not None and got.chosen.recorded_chain is not None
    assert got.chosen.top1 == 82.0


def test_pages_are_followed_and_counted(store: str) -> None:
    records = [emb(v) for v in range(1, 8)] + [tr(v, v, v + 1, 80.0) for v in range(1, 7)]
    register(store, records)
    graph = load_graph(MlflowClient(), FAMILY, page_size=4)
    assert graph.load_stats is not None
    assert graph.load_stats.pages == math.ceil(len(records) / 4)
    assert graph.load_stats.calls == 1 + graph.load_stats.pages
    assert len(graph.nodes) == 7 and len(graph.edges) == 6
    got = resolve(graph, parse_ref("fashion@1"), parse_ref("fashion@latest"))
    assert got.chosen is not None and got.chosen.path == tuple(range(1, 8))


def test_other_families_are_not_read(store: str) -> None:
    register(store, default_family())
    register(store, [emb(1, family="fashionista"), emb(2, family="fashionista")])
    graph = load_graph(MlflowClient(), FAMILY)
    assert graph.load_stats is not None and graph.load_stats.versions == 8


def test_unknown_family_lists_the_known_ones(store: str) -> None:
    register(store, default_family())
    with pytest.raises(UnknownFamilyError, match=r"^unknown family 'fahsion'; known: fashion "):
        load_graph(MlflowClient(), "fahsion")


class _Page(list):
    """What ``search_model_versions`` returns: a list with a ``token`` for the next page."""

    token: str | None = None


class PagedFake:
    """A registry of ``n`` versions that serves ``search_model_versions`` in pages."""

    def __init__(self, n_versions: int) -> None:
        self.records = [emb(v) for v in range(1, n_versions + 1)]

    def get_registered_model(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, aliases={"production": 1})

    def search_model_versions(
        self, filter_string: str, max_results: int, page_token: str | None = None
    ) -> _Page:
        assert filter_string == (
            "name IN ('fashion', 'fashion-side-info', 'fashion-transformations')"
        )
        start = int(page_token or 0)
        page = _Page(self.records[start : start + max_results])
        if start + max_results < len(self.records):
            page.token = str(start + max_results)
        return page


@pytest.mark.parametrize("n_versions", [10, 999, 1000, 1001, 5000])
def test_calls_grow_with_pages_not_versions(n_versions: int) -> None:
    graph = load_graph(PagedFake(n_versions), FAMILY, page_size=1000)
    assert graph.load_stats is not None
    pages = max(1, math.ceil(n_versions / 1000))
    assert (graph.load_stats.pages, graph.load_stats.calls) == (pages, 1 + pages)
    assert len(graph.nodes) == n_versions
