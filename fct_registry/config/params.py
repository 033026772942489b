"""The ``params.yaml`` root (:class:`Params`), its cross-section checks, and loading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from fct_registry.config._base import _Strict, check_addressable
from fct_registry.config.backfill import BackfillConfig
from fct_registry.config.data import DataConfig
from fct_registry.config.gate import GateConfig
from fct_registry.config.training import (
    BctConfig,
    SideInfoConfig,
    TransformationConfig,
    VersionConfig,
)
from fct_registry.errors import ConfigError


class EvaluationConfig(_Strict):
    distance: Literal["l2", "cosine"] = "l2"
    bootstrap_resamples: int = Field(
        2000, ge=100, description="paired-bootstrap resamples of the test queries (95% CIs)"
    )


class LauncherConfig(_Strict):
    """How training stages run: one local process, or ``torchrun`` with DistributedDataParallel
    (one process per GPU, or per CPU share with gloo). Several nodes: run ``dvc repro`` on each
    with the same ``rdzv_endpoint`` (torchrun's c10d rendezvous)."""

    kind: Literal["local", "torchrun"] = "local"
    nproc_per_node: int = Field(2, ge=1)
    nnodes: int = Field(1, ge=1)
    rdzv_endpoint: str | None = Field(None, description="HOST:PORT of the rendezvous (nnodes>1)")
    rdzv_id: str = "fct"

    @model_validator(mode="after")
    def _multi_node_needs_rendezvous(self) -> LauncherConfig:
        if self.kind == "torchrun" and self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(
                "launcher.nnodes > 1 needs launcher.rdzv_endpoint (HOST:PORT of "
                "the rendezvous, e.g. the first node's address and a free port)"
            )
        return self


class Params(_Strict):
    family: str = Field("fashion", pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    seed: int = 0
    device: str = "auto"
    launcher: LauncherConfig = LauncherConfig()
    determinism: Literal["portable", "fast"] = Field(
        "fast",
        description="portable: pinned AVX2 kernels and threads, the same bits on any x86-64 "
        "CPU with AVX2 (docs/determinism.md); fast: each machine's fastest kernels",
    )
    data: DataConfig = DataConfig()
    side_info: SideInfoConfig = SideInfoConfig()
    versions: dict[int, VersionConfig]
    transformations: dict[str, TransformationConfig] = Field(default_factory=dict)
    bct: dict[str, BctConfig] = Field(default_factory=dict)
    evaluation: EvaluationConfig = EvaluationConfig()
    gate: GateConfig = GateConfig()
    backfill: BackfillConfig | None = None

    @field_validator("transformations", "bct")
    @classmethod
    def _addressable_keys(cls, entries: dict[str, Any]) -> dict[str, Any]:
        check_addressable(entries)
        return entries

    @field_validator("versions")
    @classmethod
    def _positive_versions(cls, versions: dict[int, VersionConfig]) -> dict[int, VersionConfig]:
        if not versions:
            raise ValueError("declare at least one version under `versions:`")
        bad = [v for v in versions if v < 1]
        if bad:
            raise ValueError(f"version numbers must be >= 1, got {bad}")
        return dict(sorted(versions.items()))

    @model_validator(mode="after")
    def _cross_references(self) -> Params:
        if self.side_info.trained_with is not None:
            self._declared("side_info.trained_with", self.side_info.trained_with)
        for name, edge in self.transformations.items():
            self._declared(f"transformation {name!r}", edge.source, edge.target)
            if edge.source >= edge.target:
                raise ValueError(
                    f"transformation {name!r} goes from {edge.source} to {edge.target}; FCT "
                    "transformations map an older version into a newer one (from < to)"
                )
        if self.backfill is not None:
            self._declared("backfill", self.backfill.source, self.backfill.target)
        for name, bct in self.bct.items():
            self._declared(f"bct {name!r}", bct.old, bct.new)
        self._given_embeddings()
        self._external_models()
        return self

    def _declared(self, who: str, *versions: int) -> None:
        """Refuse the first of ``versions`` (named by ``who``) that ``versions:`` lacks."""
        for end in versions:
            if end not in self.versions:
                known = ", ".join(str(v) for v in self.versions)
                raise ValueError(
                    f"{who} names version {end}, which is not declared; declared versions: {known}"
                )

    def _external_models(self) -> None:
        """A version given as a model is frozen and has no classifier: refuse what would
        retrain it or read its classifier, naming the fix."""
        external = {
            k for k, v in self.versions.items() if v.source is not None and v.source.is_model
        }
        if not external:
            return
        for name, bct in self.bct.items():
            if bct.old in external or bct.new in external:
                raise ValueError(
                    f"bct {name!r} retrains or reads the classifier of an external version "
                    f"({sorted(external & {bct.old, bct.new})}), which has neither; remove it"
                )
        for name, edge in self.transformations.items():
            ends = {edge.source, edge.target} & external
            if ends and edge.features == "augmented":
                raise ValueError(
                    f"transformations.{name}.features: augmented is not supported with an "
                    f"external version ({sorted(ends)}); use features: stored"
                )
            if (
                edge.target in external
                and edge.kind == "fct-uncertainty"
                and edge.uncertainty.p2c_weight > 0
            ):
                raise ValueError(
                    f"transformations.{name}.uncertainty.p2c_weight needs version "
                    f"{edge.target}'s classifier, and an external version has none; set "
                    "p2c_weight: 0"
                )
        if self.backfill is not None and self.backfill.enabled and self.backfill.target in external:
            raise ValueError(
                f"the backfill stage needs version {self.backfill.target}'s classifier, and an "
                "external version has none; set backfill.enabled: false"
            )

    @property
    def embeddings_only(self) -> bool:
        """Every version and the side-info extractor are given as embedding tables: a family
        with no images and no models (see docs/embeddings-only.md)."""
        return self.side_info.source is not None and self.side_info.source.kind == "embeddings"

    def _given_embeddings(self) -> None:
        """A family given as tables is all tables, and runs nothing that needs images or a
        trained classifier."""
        given = {
            where: cfg.source is not None and cfg.source.kind == "embeddings"
            for where, cfg in [
                ("side_info", self.side_info),
                *((f"versions.{k}", v) for k, v in self.versions.items()),
            ]
        }
        if not any(given.values()):
            return
        if not all(given.values()):
            missing = [w for w, g in given.items() if not g]
            raise ValueError(
                f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} trained from "
                "images while the rest of the family is given as embedding tables; give every "
                "version and side_info a `source: {embeddings: ...}` (their rows are aligned "
                "by id), or none"
            )
        if "data" in self.model_fields_set:
            raise ValueError(
                "`data` describes images, but this family is given as embedding tables (no "
                "images); remove the `data` section"
            )
        if self.bct:
            raise ValueError(
                "bct baselines retrain a version from images, but this family is given as "
                "embedding tables; remove the `bct` section"
            )
        for name, edge in self.transformations.items():
            if edge.features == "augmented":
                raise ValueError(
                    f"transformations.{name}.features: augmented re-embeds augmented images, "
                    "but this family is given as embedding tables; use features: stored"
                )
            if edge.kind == "fct-uncertainty" and edge.uncertainty.p2c_weight > 0:
                raise ValueError(
                    f"transformations.{name}.uncertainty.p2c_weight needs the new version's "
                    "classifier, and a version given as embeddings has none; set p2c_weight: 0"
                )
        if self.backfill is not None and self.backfill.enabled:
            raise ValueError(
                "the backfill stage needs the new version's classifier, and a version given "
                "as embeddings has none; set backfill.enabled: false (`fct backfill plan` "
                "still works on its galleries)"
            )


def format_config_problems(problems: list[tuple[str, str]], source: str) -> str:
    """``invalid configuration in SOURCE:`` and one ``  where: message`` line per problem."""
    lines = [f"invalid configuration in {source}:"]
    lines += [f"  {where or '(top level)'}: {msg}" for where, msg in problems]
    return "\n".join(lines)


def _format_validation_error(err: ValidationError, source: str) -> str:
    problems = [
        (".".join(str(p) for p in item["loc"]), item["msg"].removeprefix("Value error, "))
        for item in err.errors()
    ]
    return format_config_problems(problems, source)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params PATH")
    try:
        with path.open() as fh:
            raw = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:  # the parser's own text is several lines: keep the gist
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return parse_params(raw, str(path))
