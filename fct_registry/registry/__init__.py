"""MLflow integration, one job per module.

``store`` opens the tracking store (the only module that does); ``tags`` and ``refs`` hold tag
keys, registry naming and the one version-reference format; ``flavor`` is the ``fct`` MLflow
flavor; ``onnx_export`` and ``checksums`` serve it; ``register`` registers a pipeline's models,
with ``lock`` (the per-family lock), ``query`` (searches), ``summary`` (what was registered),
``description`` (version descriptions) and ``chains`` (a chain of transformations as one
registered model). Nothing is re-exported here, so that importing ``registry.tags`` stays cheap.
"""
