"""Models: backbones, the embedding model, the side-info extractor and FCT transformations."""

from fct_registry.models.backbones import BACKBONES
from fct_registry.models.embedding import EmbeddingModel, SideInfoModel
from fct_registry.models.io import build_from_spec, load_model, load_spec, save_model
from fct_registry.models.transformations import (
    TRANSFORMATIONS,
    FCTTransformation,
    TransformationChain,
)
from fct_registry.models.uncertainty import UncertaintyTransformation  # registers fct-uncertainty

__all__ = [
    "BACKBONES",
    "TRANSFORMATIONS",
    "EmbeddingModel",
    "FCTTransformation",
    "SideInfoModel",
    "TransformationChain",
    "UncertaintyTransformation",
    "build_from_spec",
    "load_model",
    "load_spec",
    "save_model",
]
