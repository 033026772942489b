"""Reading a saved ``fct`` model folder without torch: its flavor conf, and its verification
against the registered version's record.

:mod:`~fct_registry.registry.flavor` saves, logs and loads models, so it imports the torch
modules; ``fct upgrade`` only downloads a step's ONNX graph, verifies it and reads its conf, and
runs on the core install (no torch). That part lives here, below the flavor, which re-exports it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fct_registry.errors import FctError
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.checksums import ChecksumError, verify_checksums
from fct_registry.registry.given import refuse_given

FLAVOR_NAME = "fct"
MLMODEL_FILE = "MLmodel"  # mlflow.models.model.MLMODEL_FILE_NAME


class FlavorError(FctError):
    """A model cannot be saved, logged or loaded with the fct flavor."""


def flavor_conf(path: str | os.PathLike) -> dict[str, Any]:
    """The ``fct`` section of a local model folder's MLmodel. Read as the plain YAML it is:
    ``mlflow.models.Model.load`` imports pandas, which the core install does not have."""
    try:
        loaded = yaml.safe_load((Path(path) / MLMODEL_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problem = f"no readable {MLMODEL_FILE}: {exc}"
    else:
        flavors = loaded.get("flavors") if isinstance(loaded, dict) else None
        flavors = flavors if isinstance(flavors, dict) else {}
        if isinstance(flavors.get(FLAVOR_NAME), dict):
            return flavors[FLAVOR_NAME]
        listed = ", ".join(map(str, flavors)) or "none"
        problem = f"its {MLMODEL_FILE} has no {FLAVOR_NAME!r} flavor (flavors: {listed})"
    raise FlavorError(
        f"{path} is not an fct-flavored MLflow model ({problem}); log it "
        "with fct_registry.registry.flavor.log_model"
    )


def _pin_registered_version(model_uri: str) -> tuple[str, Mapping[str, str] | None]:
    """For ``models:/name/...`` URIs: the URI of the exact version and its tags (the record the
    download is verified against).

    Resolving an alias once, then downloading that version, keeps the tag and the files from
    two different versions if the alias moves in between.
    """
    if not model_uri.startswith("models:/"):
        return model_uri, None
    from mlflow import MlflowClient
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = MlflowClient()
    resolved = get_model_name_and_version(client, model_uri)
    if len(resolved) == 1:  # models:/m-<id>: a LoggedModel, not a registered version
        return model_uri, None
    name, version = resolved
    tags = client.get_model_version(name, str(version)).tags
    refuse_given(f"version {version} of {name}", tags)  # no weights to download or run
    return f"models:/{name}/{version}", tags


def verify_registered(
    path: str | os.PathLike, version_tags: Mapping[str, str], what: str
) -> dict[str, str]:
    """Verify a downloaded model folder against its registered version's record: the
    ``fct.checksums_sha256`` digest of ``checksums.json`` (or, for versions registered before
    it, the ``fct.checksums`` JSON), then every file. Returns the verified checksums."""
    if fct_tags.CHECKSUMS_SHA256 in version_tags:
        return verify_checksums(
            path, what=what, expected_digest=version_tags[fct_tags.CHECKSUMS_SHA256]
        )
    if fct_tags.CHECKSUMS in version_tags:
        return verify_checksums(path, json.loads(version_tags[fct_tags.CHECKSUMS]), what=what)
    raise ChecksumError(
        f"{what} has no {fct_tags.CHECKSUMS_SHA256} tag, so its artifacts cannot be verified; "
        "register it with `fct register` (or flavor.log_model), or pass verify=False if you "
        "trust the store"
    )
