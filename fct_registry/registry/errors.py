"""The registry's own error type."""

from __future__ import annotations

from fct_registry.errors import FctError


class RegistryError(FctError):
    """The tracking store or registry refused an operation, or holds inconsistent state."""
