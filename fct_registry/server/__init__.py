"""The compatibility page inside the MLflow server: ``mlflow server --app-name fct``.

An ``mlflow.app`` plugin (entry point ``fct`` in pyproject.toml), like MLflow's own
``basic-auth``: :func:`create_app` adds the routes of :mod:`.page` to MLflow's Flask app and,
under uvicorn (MLflow's default server), wraps it in MLflow's FastAPI app, so one server serves
the MLflow UI and ``/fct/family/<family>``. Top layer, like the CLI: it reads the registry live
on every request through the resolver.

``fct`` has no authentication, like a plain ``mlflow server``: anyone who can reach the port
reads the page *and* reads and writes the registry through MLflow's REST API. For local use
only; behind authentication run ``--app-name fct-auth`` (:mod:`.auth`, docs/security.md).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fct_registry.server.page import blueprint

__all__ = ["UNAUTHENTICATED_WARNING", "blueprint", "create_app"]

UNAUTHENTICATED_WARNING = (
    "--app-name fct serves the compatibility page and MLflow's REST API without "
    "authentication: anyone who reaches this port can read and change the registry. Keep it on "
    "127.0.0.1, or run --app-name fct-auth (docs/security.md)."
)
log = logging.getLogger(__name__)


def create_app(app: Any = None) -> Any:
    """The ``mlflow.app`` factory: MLflow's server app with the fct routes added."""
    if app is None:
        from mlflow.server import app as mlflow_app

        app = mlflow_app
    if "fct" not in app.blueprints:
        app.register_blueprint(blueprint)
    log.warning(UNAUTHENTICATED_WARNING)
    if os.environ.get("_MLFLOW_SGI_NAME", "uvicorn") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app
