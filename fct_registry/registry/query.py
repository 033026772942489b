"""Searches of the model registry: every version of a model, or the one with a content hash."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fct_registry.registry import tags as fct_tags
from fct_registry.registry.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def search_versions(client: MlflowClient, name: str, where: str = "") -> list[ModelVersion]:
    """Every version of ``name`` matching ``where`` (MLflow filter syntax), paginated."""
    query = f"name = {fct_tags.quoted(name)}" + (f" AND {where}" if where else "")
    out: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(query, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return sorted(out, key=lambda mv: int(mv.version))


def find_version(
    client: MlflowClient, name: str, content: str, links: Mapping[str, str] | None = None
) -> ModelVersion | None:
    """The version of ``name`` with content hash ``content`` and, when given, these link tags
    (e.g. ``{fct.from: "1", fct.to: "4"}``); the oldest, should several exist."""
    if not re.fullmatch(r"[0-9a-f]{64}", content):
        raise RegistryError(f"bad content hash {content!r}; expected 64 hex digits")
    where = [f"tags.`{fct_tags.CONTENT_HASH}` = '{content}'"]
    where += [f"tags.`{k}` = {fct_tags.quoted(v)}" for k, v in (links or {}).items()]
    found = search_versions(client, name, " AND ".join(where))
    return found[0] if found else None
