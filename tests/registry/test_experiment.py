"""The family's experiment ``fct-<family>``: one function finds or creates it for registration,
the gate history and the compatibility-graph pictures."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException

from fct_registry.gate import history
from fct_registry.registry import register
from fct_registry.registry.experiment import family_experiment
from fct_registry.resolver import plot


class _Racing:
    """A store where another process creates the experiment between our lookup and create."""

    def __init__(self) -> None:
        self.created_by_other = False
        self.calls: list[str] = []

    def get_experiment_by_name(self, name: str) -> SimpleNamespace | None:
        self.calls.append(f"get {name}")
        return SimpleNamespace(experiment_id="7") if self.created_by_other else None

    def create_experiment(self, name: str, **_: object) -> str:
        self.calls.append(f"create {name}")
        self.created_by_other = True
        raise MlflowException(f"Experiment '{name}' already exists.")


def test_a_concurrently_created_experiment_is_found_not_an_error():
    client = _Racing()
    assert family_experiment(client, "fashion", None) == "7"
    assert client.calls == ["get fct-fashion", "create fct-fashion", "get fct-fashion"]


def test_a_create_failure_without_an_experiment_is_raised():
    class _Down(_Racing):
        def get_experiment_by_name(self, name: str) -> None:
            return None

    with pytest.raises(MlflowException):
        family_experiment(_Down(), "fashion", None)


def test_registration_gate_history_and_pictures_share_it():
    assert register.family_experiment is family_experiment
    assert history.family_experiment is family_experiment
    assert plot.family_experiment is family_experiment
