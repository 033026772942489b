"""Links between registered versions, recomputed from the registry itself: the transformations
into and out of each embedding version (``fct.transforms_in``/``fct.transforms_out``) and the
``pipeline-<key>`` aliases; then the version pages are re-rendered (``registry.pages``).
Run under the family lock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fct_registry.registry import description as descriptions
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.pages import refresh_descriptions
from fct_registry.registry.query import search_versions
from fct_registry.registry.summary import RegistrationSummary

if TYPE_CHECKING:
    from mlflow import MlflowClient


def set_tags(
    client: MlflowClient,
    name: str,
    version: int,
    current: Mapping[str, str],
    wanted: Mapping[str, str],
) -> None:
    for key, value in wanted.items():
        if current.get(key) != value:
            client.set_model_version_tag(name, str(version), key, value)


def update_links(
    client: MlflowClient,
    summary: RegistrationSummary,
    aliases: Mapping[tuple[str, int], set[str]],
) -> None:
    """Recompute every link that depends on other versions, from the registry (run under
    the family lock, so concurrent registrations each see the others' versions), then re-render
    the family's version pages from the registry.

    ``aliases``: the aliases each version already has (only missing ``pipeline-<key>`` aliases
    are set)."""
    family = summary.family
    t_name = fct_tags.transformations_model_name(family)
    only_transformations = f"tags.`{fct_tags.ROLE}` = '{fct_tags.ROLE_TRANSFORMATION}'"
    transformations = [
        descriptions.Linked(t_name, int(mv.version), mv.tags)
        for mv in search_versions(client, t_name, only_transformations)
    ]
    touched = {v.version for v in summary.embeddings.values()}
    for t in summary.transformations.values():
        touched |= {t.source, t.target}
    for version in sorted(v for v in touched if v is not None):
        mv = client.get_model_version(family, str(version))
        into = [t for t in transformations if t.tags.get(fct_tags.TARGET) == str(version)]
        out_of = [t for t in transformations if t.tags.get(fct_tags.SOURCE) == str(version)]
        wanted = {
            fct_tags.TRANSFORMS_IN: ",".join(str(t.version) for t in into),
            fct_tags.TRANSFORMS_OUT: ",".join(str(t.version) for t in out_of),
        }
        set_tags(client, family, version, mv.tags, wanted)
    for registered in summary.all():
        alias = fct_tags.pipeline_alias(registered.pipeline_key)
        if alias not in aliases.get((registered.model, registered.version), set()):
            client.set_registered_model_alias(registered.model, alias, str(registered.version))
    refresh_descriptions(client, family)
