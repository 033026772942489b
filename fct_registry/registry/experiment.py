"""The family's MLflow experiment ``fct-<family>``, where registration, the release gate's history
and the compatibility-graph pictures log their runs. Light: no model code is imported."""

from __future__ import annotations

from typing import Any

from fct_registry.registry import tags as fct_tags

__all__ = ["family_experiment"]


def family_experiment(client: Any, family: str, artifact_location: str | None) -> str:
    """The id of ``fct-<family>``; created (with ``artifact_location``) when missing."""
    from mlflow.exceptions import MlflowException

    name = fct_tags.experiment_name(family)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=artifact_location, tags={fct_tags.FAMILY: family}
        )
    except MlflowException:  # created concurrently by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
