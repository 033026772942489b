"""Training recipes: embedding versions, the side-info extractor, transformations and BCT
baselines."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fct_registry.config._base import _Strict
from fct_registry.config.data import ModelSource, PreprocessConfig, _check_preprocess


def _recipe_fields_unused(
    cfg: BaseModel, source: ModelSource | None, recipe: tuple[str, ...], required: str
) -> None:
    """A sourced model is not trained here: refuse recipe fields set beside ``source``, and
    require the width (checked against the tables, and tagged at registration)."""
    if source is None:
        return
    given = [f for f in recipe if f in cfg.model_fields_set]
    if given:
        raise ValueError(
            f"{', '.join(given)} {'train' if len(given) > 1 else 'trains'} a model, but "
            f"`source: {source.kind}` gives it; remove "
            f"{'them' if len(given) > 1 else 'it'} or remove `source`"
        )
    if required not in cfg.model_fields_set:
        raise ValueError(
            f"`source: {source.kind}` needs `{required}`: the width of its vectors (checked "
            "against the tables or the model)"
        )


_VERSION_RECIPE = (
    "backbone",
    "label_map",
    "label_names",
    "label_smoothing",
    "augment",
    "optim",
)
_SIDE_INFO_RECIPE = ("backbone", "projection_dim", "temperature", "trained_with", "optim")


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


class VersionConfig(_Strict):
    """One version of the embedding family: a backbone trained on a subset of the classes, or,
    with ``source``, a model given from outside (e.g. its embedding tables)."""

    source: ModelSource | None = Field(
        None, description="given, not trained: e.g. {embeddings: {train: PATH, test: PATH}}"
    )
    preprocess: PreprocessConfig | None = Field(
        None, description="external model: how images reach it (unless its source records it)"
    )
    backbone: BackboneConfig = BackboneConfig()
    embedding_dim: int = Field(128, ge=2)
    classes: list[int] | None = Field(None, description="training classes; null = all")
    label_map: list[int] | None = Field(
        None,
        description="training label of each dataset class (e.g. coarse groups); null = the "
        "class id itself. Retrieval is always scored on the dataset's own classes.",
    )
    label_names: list[str] | None = Field(None, description="names of the mapped labels")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: Literal["none", "flip_crop"] = "flip_crop"
    optim: OptimConfig = OptimConfig()

    @model_validator(mode="after")
    def _labels(self) -> VersionConfig:
        _recipe_fields_unused(self, self.source, _VERSION_RECIPE, "embedding_dim")
        _check_preprocess(self.source, self.preprocess)
        if self.label_map is not None:
            if min(self.label_map) < 0:
                raise ValueError(f"label_map entries must be >= 0, got {self.label_map}")
            used = sorted(set(self.label_map))
            if used != list(range(len(used))):
                raise ValueError(
                    f"label_map must use the labels 0..K-1 without gaps; it uses {used}"
                )
            if self.label_names is not None and len(self.label_names) != len(used):
                raise ValueError(
                    f"label_names has {len(self.label_names)} names for {len(used)} mapped labels"
                )
        elif self.label_names is not None:
            raise ValueError("label_names needs a label_map (names of the mapped labels)")
        return self

    def training_labels(self, num_classes: int) -> list[int]:
        """Training label of every dataset class (identity without ``label_map``)."""
        return list(self.label_map) if self.label_map is not None else list(range(num_classes))

    def num_labels(self, num_classes: int) -> int:
        """Width of this version's classifier."""
        return max(self.training_labels(num_classes)) + 1


class SideInfoConfig(_Strict):
    """The self-supervised (SimCLR) side-info extractor stored beside every embedding, or, with
    ``source``, one given from outside (e.g. its embedding tables)."""

    source: ModelSource | None = Field(
        None, description="given, not trained: e.g. {embeddings: {train: PATH, test: PATH}}"
    )
    preprocess: PreprocessConfig | None = Field(
        None, description="external model: how images reach it (unless its source records it)"
    )
    name: str = "simclr"
    backbone: BackboneConfig = BackboneConfig()
    dim: int = Field(128, ge=2)
    projection_dim: int = Field(128, ge=2)
    temperature: float = Field(0.5, gt=0)
    trained_with: int | None = Field(
        None,
        description="version whose training data (its classes' images) the side-info model "
        "trains on, as when it ships with that version; null = the whole training split",
    )
    optim: OptimConfig = OptimConfig()

    @model_validator(mode="after")
    def _given(self) -> SideInfoConfig:
        _recipe_fields_unused(self, self.source, _SIDE_INFO_RECIPE, "dim")
        _check_preprocess(self.source, self.preprocess)
        return self


class UncertaintyConfig(_Strict):
    """How an uncertainty-aware transformation (``fct-uncertainty``) learns its uncertainty.

    Each training item's alignment loss is its squared error per dimension plus, with
    ``p2c_weight``, FastFill's point-to-cluster cross-entropy of the new model's classifier on
    the transformed embedding; the variance head learns the expected size of that loss
    (Gaussian NLL). The cross-entropy is what makes the uncertainty order backfill the items a
    search gets wrong (wrong class cluster) first, not merely those far from their target.
    """

    beta: float = Field(1.0, ge=0, le=1, description="beta-NLL weight exponent (0 = plain NLL)")
    p2c_weight: float = Field(
        0.5,
        ge=0,
        description="weight of the point-to-cluster cross-entropy in each item's alignment loss "
        "(needs the new version's classifier and the training labels); 0 = squared error only",
    )
    p2c_trains_embedding: bool = Field(
        False,
        description="the point-to-cluster term's gradient also reaches the embedding (FastFill); "
        "false: only the variance head learns from it",
    )
    detach_variance: bool = Field(
        True,
        description="the variance head sends no gradient into the shared trunk (false: joint, "
        "as in FastFill); with p2c_trains_embedding false the embedding then trains exactly as "
        "the plain transformation's",
    )


class TransformationConfig(_Strict):
    """A learned map ``h(old, side_info) -> new`` between two versions of the family."""

    source: int = Field(alias="from")
    target: int = Field(alias="to")
    kind: str = "fct"
    hidden_dim: int = Field(2048, ge=1)
    seeds: int = Field(
        1, ge=1, description="independent trainings (seed, seed+1, ...); the first is registered"
    )
    train_on: Literal["target", "all"] = Field(
        "target", description="target: the new version's own training classes (as in ml-fct)"
    )
    features: Literal["stored", "augmented"] = Field(
        "stored",
        description="stored: the stored embeddings of un-augmented images; augmented: old, new "
        "and side-info features recomputed from freshly augmented images every batch",
    )
    optim: OptimConfig = OptimConfig(epochs=20, batch_size=1024, lr=1e-3, weight_decay=0)
    uncertainty: UncertaintyConfig = Field(
        UncertaintyConfig(), description="kind fct-uncertainty only: how its uncertainty is learnt"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BctConfig(_Strict):
    """A backward-compatible baseline: ``new``'s recipe trained with a term tying it to ``old``.

    ``kind``: ``influence`` is Shen et al. (CVPR 2020): the new embedding must also be
    classified by the old, frozen classifier (on the old labels). ``l2`` is a feature-alignment
    variant: the new embedding of each (augmented) image is pulled towards the frozen old model's
    embedding of the same image, which constrains every dimension, not only the few the old
    classifier reads, so new/old retrieval stays at least as good as old/old.

    Either way the BCT model lives in the old embedding space, so it is trained with ``new``'s
    recipe at ``old``'s ``embedding_dim`` (the price BCT pays when the old space is small).
    """

    old: int
    new: int
    kind: Literal["influence", "l2"] = "influence"
    influence_weight: float = Field(1.0, ge=0, description="weight of the BCT term")
    init_from_old: bool = Field(
        False, description="l2: start from the old model's weights (needs the same backbone)"
    )

    @model_validator(mode="after")
    def _init_needs_l2(self) -> BctConfig:
        if self.init_from_old and self.kind != "l2":
            raise ValueError("init_from_old applies to kind: l2; remove it or set kind: l2")
        return self
