"""Read a family's compatibility graph from the MLflow Model Registry in few, paginated calls.

One ``get_registered_model`` (it confirms the family exists and carries the aliases, which
``search_model_versions`` does not return), then one paginated ``search_model_versions`` over
the three registered models at once (``name IN (...)``). The cost is ``1 + pages`` calls, where
``pages = ceil(versions / page_size)``: it grows with pages, never one call per version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fct_registry.registry import tags as fct_tags
from fct_registry.resolver.errors import UnknownFamilyError
from fct_registry.resolver.graph import CompatibilityGraph, LoadStats

DEFAULT_PAGE_SIZE = 1000
"""Versions per search page. SQL stores accept up to 200,000; servers may cap lower."""


class CountingClient:
    """Wraps an ``MlflowClient`` and counts the calls made through it (for ``LoadStats``)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def load_graph(client: Any, family: str, page_size: int = DEFAULT_PAGE_SIZE) -> CompatibilityGraph:
    """The graph of ``family`` with ``load_stats`` filled in (calls, pages, versions, seconds).

    ``client`` is an ``mlflow.MlflowClient`` (or anything with the same two methods). Raises
    ``UnknownFamilyError`` listing the registered families when ``family`` is not registered.
    """
    start = time.perf_counter()
    counting = CountingClient(client)
    aliases = _aliases(counting, family)
    names = (
        family,
        fct_tags.side_info_model_name(family),
        fct_tags.transformations_model_name(family),
    )
    quoted = ", ".join(fct_tags.quoted(n) for n in names)
    records: list[Any] = []
    for page in paginate(
        lambda token: counting.search_model_versions(
            filter_string=f"name IN ({quoted})", max_results=page_size, page_token=token
        )
    ):
        records.extend(page)
    graph = CompatibilityGraph.from_records(family, records, aliases)
    graph.load_stats = LoadStats(
        calls=counting.total,
        pages=counting.calls.get("search_model_versions", 0),
        versions=len(records),
        seconds=time.perf_counter() - start,
    )
    return graph


def paginate(fetch: Callable[[str | None], Any]) -> Any:
    """Yield pages of a paginated MLflow search until it returns no ``token``."""
    token: str | None = None
    while True:
        page = fetch(token)
        yield page
        token = getattr(page, "token", None)
        if not token:
            return


def _aliases(client: Any, family: str) -> dict[str, int]:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(family)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = known_families(client)
        raise UnknownFamilyError(
            f"unknown family {family!r}; known: {', '.join(known) or 'none registered'} "
            f"(check --tracking-uri, or register the family's versions first)"
        ) from exc
    return {alias: int(v) for alias, v in (model.aliases or {}).items()}


def known_families(client: Any) -> list[str]:
    """Registered models that are families (not their ``-side-info``/``-transformations``)."""
    names: list[str] = []
    for page in paginate(
        lambda token: client.search_registered_models(max_results=1000, page_token=token)
    ):
        names.extend(m.name for m in page)
    suffixes = (fct_tags.side_info_model_name(""), fct_tags.transformations_model_name(""))
    return sorted(n for n in names if not n.endswith(suffixes))
