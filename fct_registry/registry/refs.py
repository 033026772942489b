"""The one version-reference format, and its one parser.

Accepted, for a family ``F`` (the registered model holding its embedding versions):

* ``F@3``, ``F/3``, ``models:/F/3``: version 3. In MLflow's own URIs ``@`` introduces an
  alias; here ``F@<digits>`` stays version ``<digits>`` (the form this project has always
  used), and MLflow's ``F/3`` and ``models:/F/3`` mean the same.
* ``F@production``, ``models:/F@production``: the version the MLflow alias points at.
* ``F@latest``, ``F/latest``, ``models:/F/latest``: the newest version.

Aliases are resolved in one place, against the aliases MLflow returns for the family
(:meth:`fct_registry.resolver.graph.CompatibilityGraph.version_of`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fct_registry.errors import FctError

_FAMILY = r"(?P<family>[A-Za-z][A-Za-z0-9_.-]*)"
# A selector starts with a letter, digit or "_": ``fashion@-1`` is malformed, not the alias "-1".
_SELECTOR = r"(?P<selector>[A-Za-z0-9_][A-Za-z0-9_-]*)"
_REF = re.compile(rf"^(?P<uri>models:/)?{_FAMILY}(?P<sep>[@/]){_SELECTOR}$")

REF_HELP = """\
Versions: FAMILY@N, or MLflow's FAMILY/N and models:/FAMILY/N, is version N (fashion@3 means
version 3, not an alias named 3); FAMILY@ALIAS or models:/FAMILY@ALIAS is the version an MLflow
alias points at (fashion@production); FAMILY@latest is the newest version."""
"""What ``--help`` says about version references."""


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

    @property
    def uri(self) -> str:
        """MLflow's form: ``models:/F/3``, ``models:/F@production``, ``models:/F/latest``."""
        if self.version is not None:
            return f"models:/{self.family}/{self.version}"
        if self.is_latest:
            return f"models:/{self.family}/latest"
        return f"models:/{self.family}@{self.alias}"


def parse_ref(text: str) -> VersionRef:
    """``F@3`` / ``F/3`` / ``models:/F/3``, ``F@alias`` / ``models:/F@alias``, ``F@latest``."""
    match = _REF.match(text.strip())
    if not match:
        raise FctError(
            f"bad version reference {text!r}; use FAMILY@N or FAMILY/N (e.g. fashion@3, "
            "models:/fashion/3), FAMILY@ALIAS (e.g. fashion@production) or FAMILY@latest"
        )
    family, selector, sep = match["family"], match["selector"], match["sep"]
    if selector.isdigit():
        if match["uri"] and sep == "@":
            # MLflow reads models:/F@3 as the alias "3"; guessing either way could pick the
            # wrong model, so ask for the unambiguous form.
            raise FctError(
                f"ambiguous version reference {text!r}: in an MLflow URI @ names an alias; "
                f"write models:/{family}/{selector} (or {family}@{selector}) for version "
                f"{selector}"
            )
        if int(selector) < 1:
            raise FctError(f"bad version reference {text!r}: versions start at 1")
        return VersionRef(family, version=int(selector))
    if sep == "/" and selector != "latest":
        # MLflow's models:/F/Production is a deprecated stage, not an alias.
        raise FctError(
            f"bad version reference {text!r}: after / comes a version number or latest; for "
            f"the alias {selector!r} write {family}@{selector} (or models:/{family}@{selector})"
        )
    return VersionRef(family, alias=selector)
