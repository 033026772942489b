"""What the resolver raises. Every message names what is known or reachable, and the fix."""

from __future__ import annotations

from fct_registry.errors import FctError


class ResolverError(FctError):
    """A version reference or an upgrade request that the registry cannot satisfy."""


class UnknownFamilyError(ResolverError):
    pass


class UnknownVersionError(ResolverError):
    pass


class NoPathError(ResolverError):
    pass


class SideInfoMismatchError(NoPathError):
    pass


class BackwardRequestError(NoPathError):
    pass


class UnmeasuredError(NoPathError):
    """Only transformations without a measured top-1 would connect the two versions."""
