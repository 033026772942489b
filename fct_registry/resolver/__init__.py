"""Resolving upgrades: which route of registered transformations takes a gallery from one family
version to another, chosen on measured accuracy and never mixing side-info extractors.

``graph`` (pure data), ``search`` (the route search and its ranking), ``explanation`` (why a
route won) and ``resolve`` (the entry point) know nothing of MLflow; ``errors`` holds what they
raise; ``load`` reads the registry in a bounded number of paginated calls; ``chain`` measures a
chosen route end to end and exports it; ``plot`` draws the graph. Importing this package does
not import torch or mlflow.
"""

from fct_registry.resolver.errors import (
    BackwardRequestError,
    NoPathError,
    ResolverError,
    SideInfoMismatchError,
    UnknownFamilyError,
    UnknownVersionError,
    UnmeasuredError,
)
from fct_registry.resolver.explanation import Resolution
from fct_registry.resolver.graph import (
    CompatibilityGraph,
    LoadStats,
    TransformEdge,
    UnmeasuredEdge,
    VersionNode,
)
from fct_registry.resolver.load import CountingClient, load_graph
from fct_registry.resolver.resolve import resolve
from fct_registry.resolver.search import Route, best_routes

__all__ = [
    "BackwardRequestError",
    "CompatibilityGraph",
    "CountingClient",
    "LoadStats",
    "NoPathError",
    "Resolution",
    "ResolverError",
    "Route",
    "SideInfoMismatchError",
    "TransformEdge",
    "UnknownFamilyError",
    "UnknownVersionError",
    "UnmeasuredEdge",
    "UnmeasuredError",
    "VersionNode",
    "best_routes",
    "load_graph",
    "resolve",
]
