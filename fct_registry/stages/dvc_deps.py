"""A model file named in params must be a DVC dependency of the stage that runs it.

Otherwise replacing the file (a new ``v1.onnx`` under the same name) leaves ``dvc status``
clean and ``dvc repro`` serves the old model's embeddings. ``scripts/stage_deps.py --write
--model-files`` lists the files; the stage refuses to run while one is missing, so a params
edit without that step fails loudly instead of going stale later.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from fct_registry.errors import ConfigError


def check_model_files_listed(stage: str, files: list[str], dvc_yaml: Path) -> None:
    """Raise unless ``dvc_yaml``'s ``stage`` lists every file of ``files`` among its deps.

    Nothing to check when there is no ``dvc_yaml`` (the stage's function called directly, not
    as a DVC stage) or no local file."""
    if not files or not dvc_yaml.is_file():
        return
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    body = stages.get(stage) or {}
    body = body.get("do", body)  # a foreach stage keeps its template under "do"
    deps = {d for d in body.get("deps") or [] if isinstance(d, str)}
    missing = [f for f in files if f not in deps]
    if missing:
        raise ConfigError(
            f"{dvc_yaml}: stage {stage!r} does not list the model file(s) "
            f"{', '.join(missing)} that params.yaml names, so DVC would not rerun it when they "
            "change; fix: python scripts/stage_deps.py --write --model-files, then dvc repro"
        )
