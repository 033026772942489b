"""What the resolver raises. Every message names what is known or reachable, and the fix."""

from __future__ import annotations

from fct_registry.errors import FctError


class ResolveError(FctError):
    """A version reference or an upgrade request that the registry cannot satisfy."""


class UnknownFamilyError(ResolveError):
    pass


class UnknownVersionError(ResolveError):
    pass


class NoPathError(ResolveError):
    pass


class SideInfoMismatchError(NoPathError):
    pass


class BackwardRequestError(NoPathError):
    pass


class UnmeasuredError(NoPathError):
    """Only transformations without a measured top-1 would connect the two versions."""
