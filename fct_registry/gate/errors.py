"""Gate errors. Each one means "the gate could not judge", so ``fct gate`` exits 2, never 1: CI
must tell a broken run from a failing model."""

from __future__ import annotations

from fct_registry.errors import DataError, FctError


class GateError(FctError):
    """The gate could not run as asked (bad reference, missing alias, rollback request)."""


class GateInfrastructureError(GateError):
    """The tracking store or registry could not be reached or refused a call."""


class StaleOutputsError(DataError):
    """The stored test embeddings were not computed by the registered models being gated."""
