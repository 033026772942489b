"""Starting ``mlflow server --app-name <fct app>`` from this checkout in tests."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

# What pyproject.toml declares under [project.entry-points."mlflow.app"].
APPS = {
    "fct": "fct_registry.server:create_app",
    "fct-auth": "fct_registry.server.auth:create_app",
}


def app_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for ``mlflow server``: when this environment's fct-registry was installed
    before an entry point existed, a dist-info declaring them goes on PYTHONPATH (what
    ``pip install -e .`` writes), with this checkout's code."""
    env = dict(os.environ)
    if set(APPS) <= {e.name for e in entry_points(group="mlflow.app")}:
        return env
    plugin = tmp_path_factory.mktemp("entry-point")
    info = plugin / "fct_registry_app-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fct-registry-app\nVersion: 0.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in APPS.items())
    (info / "entry_points.txt").write_text(f"[mlflow.app]\n{lines}")
    root = str(Path(__file__).resolve().parents[2])
    paths = [str(plugin), root, env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env
