"""Typed, validated configuration loaded from ``params.yaml``.

Every section is a pydantic model with ``extra="forbid"`` so a typo is an error, never a silent
``None``. Cross-references between sections (a transformation naming a version) are checked here,
at load time. Builder names (dataset, backbone, transformation kind) belong to registries that live
in higher layers, so they are checked where those are visible: :func:`fct_registry.stages.params.
check_names` before any stage starts, and by each registry's factory when it builds.

One module per job: :mod:`.data` (images, tables, given models), :mod:`.training` (recipes),
:mod:`.backfill`, :mod:`.gate`, and :mod:`.params` (the root, its cross-section checks, loading).
Callers import from here.
"""

from fct_registry.config._base import check_addressable
from fct_registry.config.backfill import BackfillConfig, UncertaintyTrainingConfig
from fct_registry.config.data import (
    DataConfig,
    EmbeddingTablesConfig,
    EntrypointSourceConfig,
    FileSourceConfig,
    MlflowSourceConfig,
    ModelSource,
    PreprocessConfig,
    SourceConfig,
)
from fct_registry.config.gate import GateCase, GateConfig, GateMetric, GateRule
from fct_registry.config.params import (
    EvaluationConfig,
    LauncherConfig,
    Params,
    format_config_problems,
    load_params,
    parse_params,
)
from fct_registry.config.training import (
    BackboneConfig,
    BctConfig,
    OptimConfig,
    SideInfoConfig,
    TransformationConfig,
    UncertaintyConfig,
    VersionConfig,
)

__all__ = [
    "BackboneConfig",
    "BackfillConfig",
    "BctConfig",
    "DataConfig",
    "EmbeddingTablesConfig",
    "EntrypointSourceConfig",
    "EvaluationConfig",
    "FileSourceConfig",
    "GateCase",
    "GateConfig",
    "GateMetric",
    "GateRule",
    "LauncherConfig",
    "MlflowSourceConfig",
    "ModelSource",
    "OptimConfig",
    "Params",
    "PreprocessConfig",
    "SideInfoConfig",
    "SourceConfig",
    "TransformationConfig",
    "UncertaintyConfig",
    "UncertaintyTrainingConfig",
    "VersionConfig",
    "check_addressable",
    "format_config_problems",
    "load_params",
    "parse_params",
]
