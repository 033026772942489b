"""The compatibility page inside the MLflow server: ``mlflow server --app-name fct``.

An ``mlflow.app`` plugin (entry point ``fct`` in pyproject.toml), like MLflow's own
``basic-auth``: :func:`create_app` adds the routes of :mod:`.page` to MLflow's Flask app and,
under uvicorn (MLflow's default server), wraps it in MLflow's FastAPI app, so one server serves
the MLflow UI and ``/fct/family/<family>``. Top layer, like the CLI: it reads the registry live
on every request through the resolver.
"""

from __future__ import annotations

import os
from typing import Any

from fct_registry.server.page import blueprint

__all__ = ["blueprint", "create_app"]


def create_app(app: Any = None) -> Any:
    """The ``mlflow.app`` factory: MLflow's server app with the fct routes added."""
    if app is None:
        from mlflow.server import app as mlflow_app

        app = mlflow_app
    if "fct" not in app.blueprints:
        app.register_blueprint(blueprint)
    if os.environ.get("_MLFLOW_SGI_NAME", "uvicorn") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app
