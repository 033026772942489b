"""The compatibility page behind MLflow's basic-auth: ``mlflow server --app-name fct-auth``.

``mlflow server`` takes one ``--app-name``: ``basic-auth`` protects the REST API and the UI but
serves no ``/fct/`` page, and ``fct`` serves the page with no authentication at all (like a plain
``mlflow server``: anyone who reaches the port can read and *write* the registry). This factory
builds MLflow's own basic-auth app and adds the page to it, so one server does both:

* every route but the page's goes through basic-auth's own ``before_request`` hook, unchanged:
  no or wrong credentials get 401, the REST API keeps basic-auth's per-resource permissions;
* the page's routes (``/fct/...``) are authenticated by basic-auth's own function (401 without
  credentials) and, as the page reads the registry with the server's own store rather than
  through the REST API, checked against basic-auth's permissions here: a non-admin user sees a
  family only with READ on its registered models (``F`` and ``F-transformations``); the index
  lists only those families.

Needs MLflow's ``auth`` extra (Flask-WTF): ``pip install 'fct-registry[auth]'``. Configure it
as for ``basic-auth`` (``MLFLOW_FLASK_SERVER_SECRET_KEY``, ``MLFLOW_AUTH_CONFIG_PATH`` or
``MLFLOW_AUTH_ADMIN_PASSWORD``); see docs/security.md.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, request
from werkzeug.datastructures import Authorization

from fct_registry.registry import tags as fct_tags
from fct_registry.server import page

__all__ = ["create_app", "readable_families"]


def create_app(app: Flask | None = None) -> Any:
    """The ``mlflow.app`` factory ``fct-auth``: MLflow's basic-auth app plus the page."""
    # MLflow's auth module needs Flask-WTF (its ``auth`` extra) and reads its config on import.
    from mlflow.server import app as mlflow_app
    from mlflow.server import auth

    app = mlflow_app if app is None else app
    if page.blueprint.name not in app.blueprints:
        app.register_blueprint(page.blueprint)
    app.config[page.FAMILY_FILTER] = readable_families
    served = auth.create_app(app)
    # basic-auth fails closed on routes it has no validator for (MLFLOW_BASIC_AUTH_FAIL_CLOSED,
    # on by default): every non-admin would get 403 on the page. Its hook stays in charge of
    # every other route; the page's requests are authenticated the same way and then checked
    # against the permissions of the family they show.
    hooks = app.before_request_funcs.setdefault(None, [])
    if auth._before_request not in hooks:
        raise RuntimeError(
            "mlflow.server.auth.create_app registered no _before_request hook: this MLflow "
            "version is not supported by --app-name fct-auth; pin mlflow as requirements.txt does"
        )
    hooks[hooks.index(auth._before_request)] = _before_request
    return served


def _before_request() -> Response | None:
    from mlflow.server import auth

    if request.blueprint != page.blueprint.name:
        return auth._before_request()
    authorization = auth.authenticate_request()
    if isinstance(authorization, Response):  # 401: no or wrong credentials
        return authorization
    if not isinstance(authorization, Authorization):
        return Response("Permission denied", status=403, mimetype="text/plain")
    g.mlflow_authenticated_user = authorization.username
    family = (request.view_args or {}).get("family")
    if family is None or all(_can_read(m) for m in _family_models(family)):
        return None  # the index: filtered by readable_families
    return Response("Permission denied", status=403, mimetype="text/plain")


def _can_read(name: str) -> bool:
    """basic-auth's verdict for the requesting user on registered model ``name``."""
    from mlflow.server import auth

    if auth.sender_is_admin():
        return True
    return auth._get_registered_model_permission(name).can_read


def _family_models(family: str) -> tuple[str, str]:
    return family, fct_tags.transformations_model_name(family)


def readable_families(families: list[str]) -> list[str]:
    """The families the requesting user may read (the index lists only these)."""
    return [f for f in families if all(_can_read(m) for m in _family_models(f))]
