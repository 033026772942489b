"""Which registered models a gallery is indexed with: the version a reference names and the
side-info extractor its ``fct.side_info`` tag links to. Torch-free, so the core install (search,
upgrade, ``fct gallery import``) can resolve it without the embedding code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fct_registry.registry import tags as fct_tags
from fct_registry.resolver.load import load_graph


@dataclass(frozen=True)
class IndexedWith:
    """Which registered models a gallery was indexed with."""

    family: str
    version: int
    model_uri: str
    side_info_ref: str | None
    side_info_uri: str | None


def models_for(client: Any, ref: Any) -> IndexedWith:
    """Resolve a version reference (``fashion@3``, ``fashion@production``) to the embedding
    model and the side-info extractor its ``fct.side_info`` tag links to."""
    graph = load_graph(client, ref.family)
    version = graph.version_of(ref)
    side_ref = graph.nodes[version].side_info
    side_uri = None
    if side_ref:
        name, side_version = fct_tags.parse_model_ref(side_ref)
        side_uri = f"models:/{name}/{side_version}"
    return IndexedWith(ref.family, version, f"models:/{ref.family}/{version}", side_ref, side_uri)
