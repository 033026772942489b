"""Builders of the models a family is given instead of training (``source:`` in params).

One builder per :class:`fct_registry.config.ModelSource` field, registered here under the same
name: it returns the model's stored train/test embeddings, in the prepared row order, and the
record its stage writes as ``source.json`` (lineage for registration). A new kind (an MLflow
model URI, an ONNX file, ...) is a config field plus one ``@SOURCE_BUILDERS.register`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from fct_registry._registry import Registry
from fct_registry.config import EmbeddingTablesConfig, ModelSource, Params, PreprocessConfig
from fct_registry.data.embedding_tables import import_table
from fct_registry.data.splits import Split, open_split, ordered_images
from fct_registry.device import pick_device
from fct_registry.layout import Layout, save_embeddings, write_given
from fct_registry.models.external import ExternalImageModel, preprocess_images
from fct_registry.models.io import save_model
from fct_registry.registry.external import load_external


@dataclass(frozen=True)
class GivenEmbeddings:
    train: torch.Tensor
    test: torch.Tensor
    record: dict[str, Any]
    # An external model (not tables): the module and spec its stage saves for registration.
    model: tuple[ExternalImageModel, dict[str, Any]] | None = None


class SourceBuilder(Protocol):
    def __call__(
        self, spec: Any, *, layout: Layout, where: str, field: str, width: int
    ) -> GivenEmbeddings: ...


SOURCE_BUILDERS: Registry[GivenEmbeddings] = Registry("model source")


@SOURCE_BUILDERS.register("embeddings")
def _embedding_tables(
    spec: EmbeddingTablesConfig, *, layout: Layout, where: str, field: str, width: int
) -> GivenEmbeddings:
    vectors, record = import_table(spec, layout.data, where, field, width)
    train, test = (torch.from_numpy(vectors[split]) for split in ("train", "test"))
    return GivenEmbeddings(train, test, record)


@dataclass(frozen=True)
class ModelContext:
    """What a model source's builder needs beyond its spec: the whole source, the params (data,
    device), the preprocessing given in params, the role and the params file's folder."""

    source: ModelSource
    params: Params
    preprocess: PreprocessConfig | None
    role: str
    base: Path


def _external_model(
    spec: Any, *, layout: Layout, where: str, field: str, width: int, context: ModelContext
) -> GivenEmbeddings:
    """Any model source: loaded as one validated ONNX graph, then run (frozen) on the prepared
    train and test images in batches; ``source.json`` records its URI, sha256 and
    preprocessing."""
    del spec, field  # the whole source travels in context
    loaded = load_external(
        context.source,
        context.preprocess,
        role=context.role,
        dim=width,
        where=where,
        base=context.base,
    )
    device = pick_device(context.params.device)
    pp = loaded.preprocess
    vectors = {
        split: embed_external(
            loaded.module, open_split(layout.data, split, context.params.data), pp, device
        )
        for split in ("train", "test")
    }
    return GivenEmbeddings(
        vectors["train"], vectors["test"], loaded.record, (loaded.module, loaded.spec)
    )


for _kind in ("mlflow", "onnx", "torchscript", "entrypoint"):
    SOURCE_BUILDERS.register(_kind)(_external_model)


@torch.no_grad()
def embed_external(
    model: ExternalImageModel,
    split: Split,
    pp: PreprocessConfig,
    device: torch.device,
    batch_size: int = 256,
) -> torch.Tensor:
    """``model``'s embeddings of every image of ``split``, in order, streamed in batches."""
    out = [
        model(preprocess_images(images.to(device), pp.resize, pp.crop, pp.channels)).cpu()
        for images in ordered_images(split, batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, model.dim)


def save_given(given: GivenEmbeddings, folder: Path, embeddings: Path, history: Path) -> None:
    """Write a given model's stage outputs: its embeddings, ``source.json``, an empty training
    history (nothing is trained, but the stage declares the plot as an output) and, for an
    external model, the module (``model.safetensors`` + ``spec.json``) registration logs."""
    save_embeddings(embeddings, given.train, given.test)
    history.parent.mkdir(parents=True, exist_ok=True)
    history.write_text("epoch,loss\n")
    if given.model is not None:
        save_model(given.model[0], given.model[1], folder)
    write_given(folder, given.record)


def build_given(
    source: ModelSource,
    *,
    layout: Layout,
    where: str,
    field: str,
    width: int,
    context: ModelContext | None = None,
) -> GivenEmbeddings:
    """The given model's embeddings, from the builder registered for ``source``'s kind
    (``context``: needed by model kinds, see :class:`ModelContext`)."""
    extra = {"context": context} if source.is_model else {}
    return SOURCE_BUILDERS.build(
        source.kind,
        spec=source.spec,
        layout=layout,
        where=where,
        field=field,
        width=width,
        **extra,
    )
