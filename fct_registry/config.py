"""Typed, validated configuration loaded from ``params.yaml``.

Every section is a pydantic model with ``extra="forbid"`` so a typo is an error, never a silent
``None``. Cross-references between sections (a transformation naming a version) are checked here,
at load time. Builder names (dataset, backbone, transformation kind) belong to registries that live
in higher layers, so they are checked where those are visible: :func:`fct_registry.pipeline.params.
check_names` before any stage starts, and by each registry's factory when it builds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fct_registry.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Image collections streamed into training (any ``fct_registry.data.image_sources``
    URI: an ImageFolder tree, a manifest, tar shards, an ``s3://`` prefix)."""

    train: str
    test: str


class DataConfig(_Strict):
    """Which dataset to use. Without ``source``: ``dataset`` from ``root``, materialised by the
    prepare stage as safetensors splits (see ``fct_registry.data``). With ``source``: images
    streamed from files through a DataLoader (``dataset``/``root``/``image_size``/``max_*``
    unused); prepare writes only ``info.json``."""

    dataset: str = "fashion-mnist"
    root: Path = Path("/usr/share/datasets/fashion-mnist")
    image_size: int | None = Field(None, gt=0, description="resize (ImageFolder only)")
    max_train: int | None = Field(None, gt=0, description="keep the first N train images (CI)")
    max_test: int | None = Field(None, gt=0, description="keep the first N test images (CI)")
    source: SourceConfig | None = Field(None, description="stream train/test images from files")
    input_shape: list[int] = Field(
        default_factory=lambda: [3, 224, 224],
        min_length=3,
        max_length=3,
        description="source: the models' input [C, H, W] (centre crop)",
    )
    resize: int | None = Field(256, gt=0, description="source: shorter side before the crop")
    upscale: bool = Field(False, description="source: enlarge images smaller than the crop")
    color: Literal["convert", "strict"] = "convert"
    stats_sample: int = Field(2000, ge=1, description="source: images sampled for mean/std")
    workers: int = Field(2, ge=0, description="source: DataLoader decoding workers")
    validate_images: bool = Field(
        True, description="source: prepare decodes every image once to find bad ones"
    )
    on_bad_image: Literal["fail", "skip"] = Field(
        "fail", description="source: skip lists bad images in skipped.json; training omits them"
    )
    checkpoint_batches: int | None = Field(
        None, ge=1, description="also checkpoint every N batches (resume mid-epoch)"
    )


class EmbeddingTablesConfig(_Strict):
    """A model given as its embeddings: one table per split (Parquet or safetensors; columns
    ``id``, ``vector``, optional ``label``), read by :mod:`fct_registry.data.embedding_tables`."""

    train: str = Field(min_length=1, description="table of the training items")
    test: str = Field(min_length=1, description="table of the held-out items")


class PreprocessConfig(_Strict):
    """How images reach an external model: shorter side to ``resize``, centre crop to
    ``crop`` x ``crop``, ``colour`` (rgb: 3 channels, gray: 1), then ``(x - mean) / std`` on
    values in [0, 1] (one entry per channel)."""

    resize: int = Field(gt=0, description="shorter side before the crop")
    crop: int = Field(gt=0, description="the model's input height and width")
    mean: list[float] = Field(min_length=1, max_length=3)
    std: list[float] = Field(min_length=1, max_length=3)
    colour: Literal["rgb", "gray"] = "rgb"

    @model_validator(mode="after")
    def _per_channel(self) -> PreprocessConfig:
        channels = self.channels
        for name in ("mean", "std"):
            if len(getattr(self, name)) != channels:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} values for colour {self.colour} "
                    f"({channels} channel{'s' if channels > 1 else ''}); give one per channel"
                )
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std must be > 0, got {self.std}")
        if self.crop > self.resize:
            raise ValueError(
                f"crop {self.crop} is larger than resize {self.resize}; set resize >= crop"
            )
        return self

    @property
    def channels(self) -> int:
        return 3 if self.colour == "rgb" else 1

    @property
    def input_shape(self) -> list[int]:
        return [self.channels, self.crop, self.crop]


class MlflowSourceConfig(_Strict):
    """An MLflow model logged with the pytorch or onnx flavor."""

    uri: str = Field(
        pattern=r"^(models|runs):/.+",
        description="models:/NAME/VERSION, models:/NAME@ALIAS or runs:/ID/PATH",
    )


class FileSourceConfig(_Strict):
    """A model file (ONNX or TorchScript); relative to the params file's folder."""

    path: str = Field(min_length=1)


class EntrypointSourceConfig(_Strict):
    """``package.module:factory`` returning an ``nn.Module``, and its weights (a safetensors or
    ``torch.save`` state dict, read without unpickling code)."""

    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    weights: str = Field(min_length=1)


class ModelSource(_Strict):
    """Where a version (or the side-info extractor) comes from when it is not trained here.

    Exactly one kind is set; each kind is one typed field here and one builder registered in
    :data:`fct_registry.pipeline.sources.SOURCE_BUILDERS` under the same name, so a new kind
    (an MLflow model URI, an ONNX file, ...) is a field plus a builder."""

    embeddings: EmbeddingTablesConfig | None = Field(
        None, description="given as embedding tables: no model, no images"
    )
    mlflow: MlflowSourceConfig | None = Field(None, description="an MLflow model URI")
    onnx: FileSourceConfig | None = Field(None, description="an ONNX file")
    torchscript: FileSourceConfig | None = Field(None, description="a TorchScript file")
    entrypoint: EntrypointSourceConfig | None = Field(None, description="a factory and its weights")

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSource:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            kinds = ", ".join(type(self).model_fields)
            raise ValueError(
                f"give exactly one source kind (known: {kinds}), got "
                f"{', '.join(given) or 'none'}; e.g. `source: {{embeddings: {{train: "
                "train.parquet, test: test.parquet}}`"
            )
        return self

    @property
    def kind(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)

    @property
    def spec(self) -> BaseModel:
        """The chosen kind's own settings."""
        return getattr(self, self.kind)

    @property
    def is_model(self) -> bool:
        """A model run here on the images (any kind but embedding tables)."""
        return self.kind != "embeddings"


# Only an MLflow model can record its own preprocessing (MLmodel metadata ``preprocess``).
_RECORDS_PREPROCESS = ("mlflow",)


def _check_preprocess(source: ModelSource | None, preprocess: PreprocessConfig | None) -> None:
    if source is None or not source.is_model:
        if preprocess is not None:
            raise ValueError(
                "preprocess applies to a model given by `source` (mlflow, onnx, torchscript, "
                "entrypoint); remove it"
            )
        return
    if preprocess is None and source.kind not in _RECORDS_PREPROCESS:
        raise ValueError(
            f"`source: {source.kind}` needs `preprocess` (resize, crop, mean, std, colour): a "
            f"{source.kind} model records none; e.g. `preprocess: {{resize: 256, crop: 224, "
            "mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], colour: rgb}`"
        )


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


class EvaluationConfig(_Strict):
    distance: Literal["l2", "cosine"] = "l2"
    bootstrap_resamples: int = Field(
        2000, ge=100, description="paired-bootstrap resamples of the test queries (95% CIs)"
    )


class UncertaintyTrainingConfig(UncertaintyConfig):
    """The backfill stage's own uncertainty-aware transformation: the loss above, its width and
    optimiser."""

    hidden_dim: int = Field(512, ge=1)
    optim: OptimConfig = OptimConfig(epochs=12, batch_size=512, lr=1e-3, weight_decay=0)


class BackfillConfig(_Strict):
    """The partial-backfill evaluation (DVC stage ``backfill``): train an uncertainty-aware
    transformation ``from -> to`` per seed and measure backfilling curves per order policy."""

    enabled: bool = True
    source: int = Field(1, alias="from")
    target: int = Field(3, alias="to")
    transformation: UncertaintyTrainingConfig = UncertaintyTrainingConfig()
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    steps: int = Field(20, ge=1, description="curve points: fractions 0, 1/steps, ..., 1")
    queries: int | None = Field(
        2000,
        ge=1,
        description="curves: this many test items (a fixed random draw) query a gallery of the "
        "others; null: every test item queries all others (leave-one-out, ~6x the time)",
    )
    policies: list[Literal["random", "uncertainty", "oracle"]] = Field(
        default_factory=lambda: ["random", "uncertainty", "oracle"], min_length=1
    )
    random_orders: int = Field(
        5,
        ge=1,
        description="random permutations per seed whose curves are averaged into the random "
        "policy's curve (its expected curve; one permutation alone is a noisy baseline)",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


GateCase = Literal["candidate", "baseline", "upgraded", "raw"]
GateMetric = Literal["top1", "top5", "mAP"]


class GateRule(_Strict):
    """One release-gate threshold, in percent: ``case.metric >= fraction * reference.metric``
    (relative) or ``case.metric >= minimum`` (absolute). Cases: ``candidate`` and ``baseline``
    (each model on its own), ``upgraded`` (candidate queries against the baseline gallery
    upgraded through the resolved chain), ``raw`` (against the baseline gallery as stored)."""

    case: GateCase
    metric: GateMetric = "top1"
    reference: GateCase | None = None
    fraction: float = Field(1.0, gt=0, le=10)
    minimum: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _one_bound(self) -> GateRule:
        if (self.reference is None) == (self.minimum is None):
            raise ValueError(
                "give exactly one bound: `reference: CASE` (with `fraction`) or `minimum: PERCENT`"
            )
        if self.reference == self.case:
            raise ValueError(
                f"a rule compares {self.case!r} with another case; set `reference` "
                "to a different case"
            )
        return self


def check_addressable(entries: dict[str, Any]) -> None:
    """Refuse keys that ``dvc exp run -S section.KEY.x=1`` cannot address: DVC parses KEY with
    Hydra's grammar, which rejects '-', '.' and a leading digit."""
    bad = [key for key in entries if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key)]
    if bad:
        raise ValueError(
            f"names {bad} cannot be addressed by `dvc exp run -S`; use letters, digits "
            "and '_', starting with a letter (e.g. `v1_to_v2`)"
        )


def _default_gate_rules() -> dict[str, GateRule]:
    return {
        "candidate_top1_vs_baseline": GateRule(
            case="candidate", metric="top1", reference="baseline", fraction=1.0
        ),
        "upgraded_top1_vs_baseline": GateRule(
            case="upgraded", metric="top1", reference="baseline", fraction=1.0
        ),
        "upgraded_top1_vs_candidate": GateRule(
            case="upgraded", metric="top1", reference="candidate", fraction=0.9
        ),
        "upgraded_mAP_vs_baseline": GateRule(
            case="upgraded", metric="mAP", reference="baseline", fraction=1.0
        ),
        "upgraded_mAP_vs_candidate": GateRule(
            case="upgraded", metric="mAP", reference="candidate", fraction=0.85
        ),
    }


class GateConfig(_Strict):
    """The release gate (``fct gate``): which versions it compares and the rules they must pass.

    ``candidate``/``baseline`` are selectors within ``family``: a version number, an alias or
    ``latest`` (so ``production`` means ``<family>@production``).
    """

    candidate: str = Field("latest", pattern=r"^[A-Za-z0-9_-]+$")
    baseline: str = Field("production", pattern=r"^[A-Za-z0-9_-]+$")
    rules: dict[str, GateRule] = Field(default_factory=_default_gate_rules)

    @field_validator("rules")
    @classmethod
    def _named_rules(cls, rules: dict[str, GateRule]) -> dict[str, GateRule]:
        if not rules:
            raise ValueError("declare at least one rule under `gate.rules:`")
        check_addressable(rules)
        return rules


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
        known = ", ".join(str(v) for v in self.versions)
        trained_with = self.side_info.trained_with
        if trained_with is not None and trained_with not in self.versions:
            raise ValueError(
                f"side_info.trained_with names version {trained_with}, which is not declared; "
                f"declared versions: {known}"
            )
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
        if self.backfill is not None:
            for end in (self.backfill.source, self.backfill.target):
                if end not in self.versions:
                    raise ValueError(
                        f"backfill names version {end}, which is not declared; "
                        f"declared versions: {known}"
                    )
        for name, bct in self.bct.items():
            for end in (bct.old, bct.new):
                if end not in self.versions:
                    raise ValueError(
                        f"bct {name!r} names version {end}, which is not declared; "
                        f"declared versions: {known}"
                    )
        self._given_embeddings()
        self._external_models()
        return self

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
