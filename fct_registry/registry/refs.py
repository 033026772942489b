"""The one version-reference format: ``family@3``, ``family@production`` (an MLflow alias) or
``family@latest``; and its one parser."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fct_registry.errors import FctError

_REF = re.compile(r"^(?P<family>[A-Za-z][A-Za-z0-9_.-]*)@(?P<selector>[A-Za-z0-9_][A-Za-z0-9_-]*)$")
# A selector starts with a letter, digit or "_": ``fashion@-1`` is malformed, not the alias "-1".


@dataclass(frozen=True)
class VersionRef:
    family: str
    version: int | None = None  # set for ``family@3``
    alias: str | None = None  # set for ``family@production``; "latest" means the newest

    def __str__(self) -> str:
        return f"{self.family}@{self.version if self.version is not None else self.alias}"

    @property
    def is_latest(self) -> bool:
        return self.alias == "latest"


def parse_ref(text: str) -> VersionRef:
    match = _REF.match(text.strip())
    if not match:
        raise FctError(
            f"bad version reference {text!r}; use FAMILY@N (e.g. fashion@3), "
            "FAMILY@ALIAS (e.g. fashion@production) or FAMILY@latest"
        )
    family, selector = match["family"], match["selector"]
    if selector.isdigit():
        if int(selector) < 1:
            raise FctError(f"bad version reference {text!r}: versions start at 1")
        return VersionRef(family, version=int(selector))
    return VersionRef(family, alias=selector)
