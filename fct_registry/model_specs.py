"""Typed model specs: what ``spec.json`` holds next to a model's weights.

A spec names the model's ``kind`` and its constructor arguments, so loading rebuilds the module
without executing stored code (``models.io.build_from_spec``). Labels that do not shape the
module (``family``, ``version``, ``seed``, ...) ride along as extra fields and are written back
unchanged. ``spec | {"seed": 3}`` is a validated copy with fields changed or labels added, the
way stages label the spec of what they trained.

``to_dict`` is what ``spec.json`` stores: fields left ``None`` (``preprocess`` of an in-memory
split, ``from``/``to`` of a hand-written transformation spec) are not written, as before the
specs were typed, so tracked outputs keep their bytes.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fct_registry.config import BackboneConfig
from fct_registry.errors import DataError


class ModelSpec(BaseModel):
    # extra="allow": labels (family, version, bct, seed, ...) are kept and written back
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``spec.json`` holds."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def __or__(self, update: Mapping[str, Any]) -> Self:
        return type(self).model_validate({**self.to_dict(), **update})


class ImageSpec(ModelSpec):
    """A trained image model: a registered backbone with a linear head, normalising inside."""

    backbone: str
    backbone_kwargs: dict[str, Any] = Field(default_factory=dict)
    in_channels: int
    input_shape: list[int] | None = None
    mean: list[float]
    std: list[float]
    preprocess: dict[str, Any] | None = None  # how streamed image files were decoded/cropped

    @property
    @abstractmethod
    def sizes(self) -> tuple[int, int]:
        """The embedding's width and the training head's output size (the model's arguments
        between ``in_channels`` and ``mean``)."""


class EmbeddingSpec(ImageSpec):
    kind: Literal["embedding"] = "embedding"
    embedding_dim: int
    num_classes: int

    @property
    def sizes(self) -> tuple[int, int]:
        return self.embedding_dim, self.num_classes


class SideInfoSpec(ImageSpec):
    kind: Literal["side_info"] = "side_info"
    name: str | None = None
    dim: int
    projection_dim: int

    @property
    def sizes(self) -> tuple[int, int]:
        return self.dim, self.projection_dim


class TransformationSpec(ModelSpec):
    kind: Literal["transformation"] = "transformation"
    type: str
    source: int | None = Field(None, alias="from")
    target: int | None = Field(None, alias="to")
    old_dim: int
    new_dim: int
    side_info_dim: int
    hidden_dim: int


class ExternalSpec(ModelSpec):
    """An image model given from outside, held as an ONNX graph (``models.external``)."""

    kind: Literal["embedding", "side_info"]
    external: Literal[True] = True
    input_shape: list[int]
    graph_bytes: int
    preprocess: dict[str, Any]
    embedding_dim: int | None = None  # kind embedding
    dim: int | None = None  # kind side_info


SPECS: dict[str, type[ModelSpec]] = {
    "embedding": EmbeddingSpec,
    "side_info": SideInfoSpec,
    "transformation": TransformationSpec,
}


def image_fields(backbone: BackboneConfig, info: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`ImageSpec` fields of a model trained on the prepared data ``info``
    (``data/info.json``): its backbone, input shape and normalisation, and how streamed image
    files were decoded (``transform``; absent for in-memory splits)."""
    channels, height, width = info["shape"]
    return {
        "backbone": backbone.name,
        "backbone_kwargs": dict(backbone.kwargs),
        "in_channels": channels,
        "input_shape": [channels, height, width],
        "mean": info["mean"],
        "std": info["std"],
        "preprocess": info.get("transform"),
    }


def parse_spec(spec: ModelSpec | Mapping[str, Any]) -> ModelSpec:
    """The typed spec of a ``spec.json`` object (a typed spec is returned as it is)."""
    if isinstance(spec, ModelSpec):
        return spec
    kind = spec.get("kind")
    cls = ExternalSpec if spec.get("external") else SPECS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise DataError(
            f"unknown model kind {kind!r} in spec; expected embedding, side_info or transformation"
        )
    try:
        return cls.model_validate(dict(spec))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise DataError(
            f"{kind} model spec is invalid at {where}: {first['msg']}; re-train or re-export "
            "the model (its spec.json was written by another version)"
        ) from None
