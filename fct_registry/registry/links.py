"""Links between registered versions, recomputed from the registry itself: the transformations
into and out of each embedding version (``fct.transforms_in``/``fct.transforms_out``), every
version's description, and the ``pipeline-<key>`` aliases. Run under the family lock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from fct_registry.registry import description as D
from fct_registry.registry import tags as T
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


def set_description(
    client: MlflowClient, name: str, version: int, current: str | None, text: str
) -> None:
    if (current or "") != text:
        client.update_model_version(name, str(version), description=text)


def update_links(
    client: MlflowClient,
    summary: RegistrationSummary,
    key_map: dict[str, int],
    compatibility: str | None,
    aliases: Mapping[tuple[str, int], set[str]],
) -> None:
    """Recompute every link that depends on other versions, from the registry (run under
    the family lock, so concurrent registrations each see the others' versions).

    ``compatibility``: the evaluate stage's table for the descriptions; ``aliases``: the aliases
    each version already has (only missing ``pipeline-<key>`` aliases are set)."""
    family = summary.family
    t_name = T.transformations_model_name(family)
    only_transformations = f"tags.`{T.ROLE}` = '{T.ROLE_TRANSFORMATION}'"
    transformations = [
        D.Linked(t_name, int(mv.version), mv.tags)
        for mv in search_versions(client, t_name, only_transformations)
    ]
    touched = {v.version for v in summary.embeddings.values()}
    for t in summary.transformations.values():
        touched |= {t.source, t.target}
    for version in sorted(v for v in touched if v is not None):
        mv = client.get_model_version(family, str(version))
        into = [t for t in transformations if t.tags.get(T.TARGET) == str(version)]
        out_of = [t for t in transformations if t.tags.get(T.SOURCE) == str(version)]
        tags = dict(mv.tags)
        wanted = {
            T.TRANSFORMS_IN: ",".join(str(t.version) for t in into),
            T.TRANSFORMS_OUT: ",".join(str(t.version) for t in out_of),
        }
        set_tags(client, family, version, tags, wanted)
        tags.update(wanted)
        set_description(
            client,
            family,
            version,
            mv.description,
            D.embedding_description(
                family,
                version,
                tags,
                into=into,
                out_of=out_of,
                compatibility=compatibility,
                key_map=key_map,
            ),
        )
    for t in summary.transformations.values():
        mv = client.get_model_version(t_name, str(t.version))
        set_description(
            client,
            t_name,
            t.version,
            mv.description,
            D.transformation_description(
                family, t.version, mv.tags, compatibility=compatibility, key_map=key_map
            ),
        )
    side = summary.side_info
    mv = client.get_model_version(side.model, str(side.version))
    ref = T.model_ref(side.model, side.version)
    readers = [t for t in transformations if t.tags.get(T.SIDE_INFO) == ref]
    set_description(
        client,
        side.model,
        side.version,
        mv.description,
        D.side_info_description(
            family,
            side.version,
            mv.tags,
            readers=readers,
            compatibility=compatibility,
            key_map=key_map,
        ),
    )
    for registered in summary.all():
        alias = T.pipeline_alias(registered.pipeline_key)
        if alias not in aliases.get((registered.model, registered.version), set()):
            client.set_registered_model_alias(registered.model, alias, str(registered.version))
