"""Keep every version page of a family current: descriptions re-rendered from the registry.

A version's description shows its links (transformations and chains into and out of an embedding
version, readers of a side-info extractor), its release state (``production`` alias, gate
verdict) and its provenance, all read from version tags and aliases
(:mod:`fct_registry.registry.description`). Whatever changes one of those (a registration, a
recorded chain, a gate verdict, a promotion) calls :func:`refresh_descriptions`, which rewrites
only the descriptions whose text changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fct_registry.registry import description as descriptions
from fct_registry.registry import tags as fct_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient


def all_versions(client: MlflowClient, name: str) -> list[Any]:
    """Every version of registered model ``name`` (paginated), oldest first; none if missing."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(
            f"name = {fct_tags.quoted(name)}", max_results=1000, page_token=token
        )
        out.extend(page)
        token = page.token
        if not token:
            return sorted(out, key=lambda mv: int(mv.version))


def aliases_by_version(client: MlflowClient, name: str) -> dict[int, list[str]]:
    """``{version: [aliases]}`` of a registered model (empty when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return {}
    out: dict[int, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        out.setdefault(int(version), []).append(alias)
    return out


def refresh_descriptions(client: MlflowClient, family: str) -> int:
    """Re-render the description of every version of ``family`` (embedding versions,
    side-info extractors, transformations and chains); returns how many changed."""
    t_name = fct_tags.transformations_model_name(family)
    s_name = fct_tags.side_info_model_name(family)
    links = [
        descriptions.Linked(t_name, int(mv.version), mv.tags) for mv in all_versions(client, t_name)
    ]
    edges = sorted(
        links,
        key=lambda t: (
            t.tags.get(fct_tags.ROLE) == fct_tags.ROLE_CHAIN,
            t.tags.get(fct_tags.SOURCE, ""),
            t.version,
        ),
    )
    changed = 0

    def write(mv: Any, text: str) -> None:
        nonlocal changed
        if (mv.description or "") != text:
            client.update_model_version(mv.name, str(mv.version), description=text)
            changed += 1

    aliases = aliases_by_version(client, family)
    for mv in all_versions(client, family):
        v = str(mv.version)
        into = [t for t in edges if t.tags.get(fct_tags.TARGET) == v]
        out_of = [t for t in edges if t.tags.get(fct_tags.SOURCE) == v]
        text = descriptions.embedding_description(
            family,
            int(v),
            mv.tags,
            into=into,
            out_of=out_of,
            aliases=aliases.get(int(v), []),
        )
        write(mv, text)
    t_aliases = aliases_by_version(client, t_name)
    for mv in all_versions(client, t_name):
        text = descriptions.transformation_description(
            family, int(mv.version), mv.tags, aliases=t_aliases.get(int(mv.version), [])
        )
        write(mv, text)
    for mv in all_versions(client, s_name):
        ref = fct_tags.model_ref(s_name, mv.version)
        readers = [t for t in edges if t.tags.get(fct_tags.SIDE_INFO) == ref]
        write(
            mv,
            descriptions.side_info_description(family, int(mv.version), mv.tags, readers=readers),
        )
    return changed
