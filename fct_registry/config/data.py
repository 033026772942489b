"""Where images, embedding tables and given models come from: ``data`` and ``source``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from fct_registry.config._base import _Strict


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
    :data:`fct_registry.stages.sources.SOURCE_BUILDERS` under the same name, so a new kind
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

    def local_files(self, base: Path) -> list[str]:
        """The local files this source reads, relative to ``base`` (the params file's folder),
        as ``dvc.yaml`` lists them: an ONNX or TorchScript file; an entry point's weights and
        its module when that is a ``.py`` file under ``base``. None for an MLflow URI (pinned by
        its version) or embedding tables (read as data)."""
        if self.kind in ("mlflow", "embeddings"):
            return []
        spec = self.spec
        if self.kind != "entrypoint":
            return [Path(spec.path).as_posix()]
        module = Path(*spec.factory.split(":")[0].split(".")).with_suffix(".py")
        local = [module.as_posix()] if (base / module).is_file() else []  # else: installed
        return [*local, Path(spec.weights).as_posix()]

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
