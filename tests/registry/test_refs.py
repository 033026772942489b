"""Version references: this project's ``F@3`` and MLflow's own forms, one parser (table-driven)."""

from __future__ import annotations

import pytest

from fct_registry.errors import FctError
from fct_registry.registry.refs import VersionRef, parse_ref
from fct_registry.resolver import CompatibilityGraph
from tests.resolver.records import emb


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("fashion@3", VersionRef("fashion", version=3)),  # compatibility: @digits is a version
        ("fashion/3", VersionRef("fashion", version=3)),
        ("models:/fashion/3", VersionRef("fashion", version=3)),
        (" models:/fashion/12 ", VersionRef("fashion", version=12)),
        ("fashion@production", VersionRef("fashion", alias="production")),
        ("models:/fashion@production", VersionRef("fashion", alias="production")),
        ("models:/fashion@pipeline-3", VersionRef("fashion", alias="pipeline-3")),
        ("fashion@latest", VersionRef("fashion", alias="latest")),
        ("fashion/latest", VersionRef("fashion", alias="latest")),
        ("models:/fashion/latest", VersionRef("fashion", alias="latest")),
        ("fashion-transformations/8", VersionRef("fashion-transformations", version=8)),
    ],
)
def test_accepted_forms(text: str, want: VersionRef) -> None:
    assert parse_ref(text) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:/fashion@3", "write models:/fashion/3"),  # MLflow would read an alias "3"
        ("fashion/production", "write fashion@production"),  # a stage, not an alias
        ("models:/fashion/Production", "write fashion@Production"),
        ("fashion/0", "versions start at 1"),
        ("models:/fashion", "bad version reference"),
        ("runs:/abc/model", "bad version reference"),
        ("fashion", "bad version reference"),
        ("fashion@", "bad version reference"),
        ("fashion//3", "bad version reference"),
    ],
)
def test_refused_forms_name_the_fix(text: str, message: str) -> None:
    with pytest.raises(FctError, match=message):
        parse_ref(text)


@pytest.mark.parametrize(
    ("ref", "uri"),
    [
        (VersionRef("fashion", version=3), "models:/fashion/3"),
        (VersionRef("fashion", alias="production"), "models:/fashion@production"),
        (VersionRef("fashion", alias="latest"), "models:/fashion/latest"),
    ],
)
def test_uri_round_trips(ref: VersionRef, uri: str) -> None:
    assert ref.uri == uri and parse_ref(uri) == ref and parse_ref(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("fashion@2", 2),
        ("fashion/2", 2),
        ("models:/fashion/2", 2),
        ("fashion@production", 1),
        ("models:/fashion@production", 1),
        ("models:/fashion/latest", 3),
    ],
)
def test_every_form_resolves_through_the_registry_aliases(text: str, version: int) -> None:
    graph = CompatibilityGraph.from_records("fashion", [emb(1), emb(2), emb(3)], {"production": 1})
    assert graph.version_of(parse_ref(text)) == version
