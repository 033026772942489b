"""Resolving upgrades: which chain of registered transformations takes a gallery from one family
version to another, chosen on measured accuracy and never mixing side-info extractors.

``graph`` (pure data) and ``resolve`` (pure search) know nothing of MLflow; ``load`` reads the
registry in a bounded number of paginated calls; ``chain`` loads, evaluates, records and exports a
chosen chain; ``plot`` draws the graph. Importing this package does not import torch or mlflow.
"""

from fct_registry.resolver.graph import (
    BackwardRequestError,
    CompatibilityGraph,
    LoadStats,
    NoPathError,
    ResolveError,
    SideInfoMismatchError,
    TransformEdge,
    UnknownFamilyError,
    UnknownVersionError,
    VersionNode,
)
from fct_registry.resolver.load import CountingClient, load_graph
from fct_registry.resolver.resolve import Chain, Resolution, best_routes, resolve

__all__ = [
    "BackwardRequestError",
    "Chain",
    "CompatibilityGraph",
    "CountingClient",
    "LoadStats",
    "NoPathError",
    "Resolution",
    "ResolveError",
    "SideInfoMismatchError",
    "TransformEdge",
    "UnknownFamilyError",
    "UnknownVersionError",
    "VersionNode",
    "best_routes",
    "load_graph",
    "resolve",
]
