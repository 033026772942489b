"""fct-registry: Forward Compatible Training (arXiv 2112.02805) as a model-registry extension."""

__version__ = "0.1.0"
