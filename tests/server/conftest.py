"""The registered tiny pipeline of tests/registry, shared (session fixtures)."""

from tests.registry.conftest import (  # noqa: F401  (session fixtures)
    empty_store,
    registered,
    tiny_pipeline,
)
