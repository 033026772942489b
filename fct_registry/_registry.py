"""A tiny registry of named builders (timm-style).

``@REG.register("name")`` on a builder, then ``REG.build(name, **kw)``; unknown names fail with
the list of known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fct_registry.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._builders[name] = fn
            return fn

        return decorator

    def member(self, name: str) -> Callable[[T], T]:
        """Decorator registering the decorated object itself: ``build(name)`` returns it."""

        def decorator(value: T) -> T:
            self.register(name)(lambda: value)
            return value

        return decorator

    def check(self, name: str) -> str:
        """Return ``name`` if known, else raise an error listing the known names."""
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return name

    def build(self, name: str, **kwargs: object) -> T:
        return self._builders[self.check(name)](**kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
