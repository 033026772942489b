"""Typed, validated configuration loaded from ``params.yaml``.

Every section is a pydantic model with ``extra="forbid"`` so a typo is an error, never a silent
``None``. Cross-references (a transformation naming a version, a backbone name) are checked at load
time, before any training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fct_registry.errors import ConfigError


def _known(registry: Any, name: str) -> str:
    # pydantic only collects ValueErrors into its located error report.
    try:
        return registry.check(name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Which dataset to use. ``root`` is the dataset's folder (see ``fct_registry.data``)."""

    dataset: str = "fashion-mnist"
    root: Path = Path("/usr/share/datasets/fashion-mnist")
    image_size: int | None = Field(None, gt=0, description="resize (ImageFolder only)")
    max_train: int | None = Field(None, gt=0, description="keep the first N train images (CI)")
    max_test: int | None = Field(None, gt=0, description="keep the first N test images (CI)")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from fct_registry.data import DATASETS

        return _known(DATASETS, name)


class OptimConfig(_Strict):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    max_batches: int | None = Field(
        None, ge=1, description="stop each epoch after N batches (tiny CI runs)"
    )


class BackboneConfig(_Strict):
    name: str = "smallcnn"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from fct_registry.models import BACKBONES

        return _known(BACKBONES, name)


class VersionConfig(_Strict):
    """One version of the embedding family: a backbone trained on a subset of the classes."""

    backbone: BackboneConfig = BackboneConfig()
    embedding_dim: int = Field(128, ge=2)
    classes: list[int] | None = Field(None, description="training classes; null = all")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: Literal["none", "flip_crop"] = "flip_crop"
    optim: OptimConfig = OptimConfig()


class SideInfoConfig(_Strict):
    """The self-supervised (SimCLR) side-info extractor stored beside every embedding."""

    name: str = "simclr"
    backbone: BackboneConfig = BackboneConfig()
    dim: int = Field(128, ge=2)
    projection_dim: int = Field(128, ge=2)
    temperature: float = Field(0.5, gt=0)
    optim: OptimConfig = OptimConfig()


class TransformationConfig(_Strict):
    """A learned map ``h(old, side_info) -> new`` between two versions of the family."""

    source: int = Field(alias="from")
    target: int = Field(alias="to")
    kind: str = "fct"
    hidden_dim: int = Field(2048, ge=1)
    optim: OptimConfig = OptimConfig(epochs=20, batch_size=1024, lr=1e-3, weight_decay=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, name: str) -> str:
        from fct_registry.models import TRANSFORMATIONS

        return _known(TRANSFORMATIONS, name)

    @property
    def uses_side_info(self) -> bool:
        from fct_registry.models.transformations import uses_side_info

        return uses_side_info(self.kind)


class BctConfig(_Strict):
    """BCT baseline (Shen et al. 2020): train ``new``'s recipe with ``old``'s frozen classifier."""

    old: int
    new: int
    influence_weight: float = Field(1.0, ge=0)


class EvaluationConfig(_Strict):
    distance: Literal["l2", "cosine"] = "l2"


class Params(_Strict):
    family: str = Field("fashion", pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    seed: int = 0
    device: str = "auto"
    data: DataConfig = DataConfig()
    side_info: SideInfoConfig = SideInfoConfig()
    versions: dict[int, VersionConfig]
    transformations: dict[str, TransformationConfig] = Field(default_factory=dict)
    bct: dict[str, BctConfig] = Field(default_factory=dict)
    evaluation: EvaluationConfig = EvaluationConfig()

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
        known = ", ".join(str(v) for v in self.versions)
        for name, edge in self.transformations.items():
            for end in (edge.source, edge.target):
                if end not in self.versions:
                    raise ValueError(
                        f"transformation {name!r} names version {end}, which is not declared; "
                        f"declared versions: {known}"
                    )
            if edge.source >= edge.target:
                raise ValueError(
                    f"transformation {name!r} goes from {edge.source} to {edge.target}; FCT "
                    "transformations map an older version into a newer one (from < to)"
                )
        for name, bct in self.bct.items():
            for end in (bct.old, bct.new):
                if end not in self.versions:
                    raise ValueError(
                        f"bct {name!r} names version {end}, which is not declared; "
                        f"declared versions: {known}"
                    )
            old_dim = self.versions[bct.old].embedding_dim
            new_dim = self.versions[bct.new].embedding_dim
            if old_dim != new_dim:
                raise ValueError(
                    f"bct {name!r}: version {bct.new} has embedding_dim {new_dim} but version "
                    f"{bct.old} has {old_dim}; BCT reuses the old classifier, so set both equal"
                )
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass --params PATH")
    with path.open() as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return parse_params(raw, str(path))
