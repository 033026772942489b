"""Params as the pipeline runs them: structurally valid (``fct_registry.config``) and naming only
builders that exist.

The builder registries (datasets, backbones, transformation kinds) live in the ``data`` and
``models`` packages, above ``config``; this check sits in the pipeline layer, which sees both, and
runs before any stage starts so a typo never costs a training run.
"""

from __future__ import annotations

from pathlib import Path

from fct_registry._registry import Registry
from fct_registry.config import Params, format_config_problems, load_params
from fct_registry.data.sources import DATASETS
from fct_registry.errors import ConfigError
from fct_registry.models import uncertainty as _uncertainty  # noqa: F401  (registers fct-uncertainty)
from fct_registry.models.backbones import BACKBONES
from fct_registry.models.transformations import TRANSFORMATIONS


def check_names(params: Params, source: str = "params") -> Params:
    """``params`` if every builder it names is registered; else one error listing each unknown
    name with where it is and the known names."""
    named: list[tuple[str, Registry, str]] = [("data.dataset", DATASETS, params.data.dataset)]
    named.append(("side_info.backbone.name", BACKBONES, params.side_info.backbone.name))
    for key, version in params.versions.items():
        named.append((f"versions.{key}.backbone.name", BACKBONES, version.backbone.name))
    for key, edge in params.transformations.items():
        named.append((f"transformations.{key}.kind", TRANSFORMATIONS, edge.kind))
    problems = []
    for where, registry, name in named:
        try:
            registry.check(name)
        except ConfigError as exc:
            problems.append((where, str(exc)))
    if problems:
        raise ConfigError(format_config_problems(problems, source))
    return params


def load_checked_params(path: str | Path = "params.yaml") -> Params:
    """:func:`~fct_registry.config.load_params`, then :func:`check_names`."""
    return check_names(load_params(path), str(path))
