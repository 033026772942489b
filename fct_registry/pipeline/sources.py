"""Builders of the models a family is given instead of training (``source:`` in params).

One builder per :class:`fct_registry.config.ModelSource` field, registered here under the same
name: it returns the model's stored train/test embeddings, in the prepared row order, and the
record its stage writes as ``source.json`` (lineage for registration). A new kind (an MLflow
model URI, an ONNX file, ...) is a config field plus one ``@SOURCE_BUILDERS.register`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from fct_registry._registry import Registry
from fct_registry.config import EmbeddingTablesConfig, ModelSource
from fct_registry.data.embedding_tables import import_table
from fct_registry.layout import Layout


@dataclass(frozen=True)
class GivenEmbeddings:
    train: torch.Tensor
    test: torch.Tensor
    record: dict[str, Any]


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
    return GivenEmbeddings(vectors["train"], vectors["test"], record)


def build_given(
    source: ModelSource, *, layout: Layout, where: str, field: str, width: int
) -> GivenEmbeddings:
    """The given model's embeddings, from the builder registered for ``source``'s kind."""
    return SOURCE_BUILDERS.build(
        source.kind, spec=source.spec, layout=layout, where=where, field=field, width=width
    )
