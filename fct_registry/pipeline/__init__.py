"""The DVC pipeline's stages as library functions, and where their outputs live."""

from fct_registry.pipeline.layout import Layout

__all__ = ["Layout"]
