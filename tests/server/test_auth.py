"""The compatibility page behind MLflow's basic-auth (``mlflow server --app-name fct-auth``), on
loopback: anonymous clients get 401 on the page and on the REST API (reads and writes), an
authenticated admin gets both, and a user's basic-auth permissions hold on the page too."""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request

import pytest

from tests.server.apps import app_env
from tests.support.services import http_ok, start_ui, stop

pytestmark = pytest.mark.services
ADMIN, ADMIN_PW = "admin", "fct-admin-pw-2026!"
READER, READER_PW = "reader", "fct-reader-pw-2026!"


def _registry(uri: str) -> None:
    """Two families, no training: ``fashion`` (readable by everyone) and ``secret``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    for family in ("fashion", "secret"):
        client.create_registered_model(family)
        client.create_registered_model(f"{family}-transformations")
        for version, top1 in ((1, "55.9"), (2, "73.0")):
            client.create_model_version(
                family,
                source=f"/nowhere/{family}/{version}",
                tags={"fct.role": "embedding", "fct.family": family, "fct.top1": top1},
            )


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth-server")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    _registry(uri)
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN}\nadmin_password = {ADMIN_PW}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = app_env(tmp_path_factory)
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(config),
        MLFLOW_FLASK_SERVER_SECRET_KEY="fct-test-secret-key",
    )
    proc, url = start_ui(uri, folder / "server.log", app_name="fct-auth", env=env, timeout=120)
    try:
        # A second user, who may not read `secret`.
        _call(url, "POST", "/api/2.0/mlflow/users/create", ADMIN, READER, READER_PW)
        grant = {
            "username": READER,
            "resource_type": "registered_model",
            "resource_id": "secret",
            "permission": "DENY",
        }
        status, body = _request(
            url, "POST", "/api/3.0/mlflow/users/permissions/grant", (ADMIN, ADMIN_PW), grant
        )
        assert status == 200, body
        yield url
    finally:
        stop(proc)


def _request(
    url: str, method: str, path: str, user: tuple[str, str] | None, body: dict | None = None
) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _call(url: str, method: str, path: str, admin: str, username: str, password: str) -> None:
    status, body = _request(
        url, method, path, (admin, ADMIN_PW), {"username": username, "password": password}
    )
    assert status == 200, body


SET_TAG = "/api/2.0/mlflow/model-versions/set-tag"
TAG = {"name": "fashion", "version": "1", "key": "fct.note", "value": "changed"}
PAGES = ["/fct/", "/fct/family/fashion", "/fct/api/family/fashion"]


def test_anonymous_clients_get_401_on_the_page_and_the_rest_api(auth_server):
    assert http_ok(f"{auth_server}/health")  # unprotected, as in basic-auth
    for path in [*PAGES, "/api/2.0/mlflow/registered-models/search"]:
        status, _ = _request(auth_server, "GET", path, None)
        assert status == 401, path
    assert _request(auth_server, "POST", SET_TAG, None, TAG)[0] == 401
    assert _request(auth_server, "GET", "/fct/family/fashion", ("admin", "wrong"))[0] == 401


def test_the_admin_reads_the_page_and_writes_through_the_api(auth_server):
    admin = (ADMIN, ADMIN_PW)
    status, index = _request(auth_server, "GET", "/fct/", admin)
    assert status == 200 and "family/fashion" in index and "family/secret" in index
    status, page = _request(auth_server, "GET", "/fct/family/fashion", admin)
    assert status == 200 and "Compatibility graph" in page
    status, data = _request(auth_server, "GET", "/fct/api/family/fashion", admin)
    assert status == 200 and json.loads(data)["versions"] == [1, 2]
    assert _request(auth_server, "POST", SET_TAG, admin, TAG)[0] == 200
    status, got = _request(
        auth_server, "GET", "/api/2.0/mlflow/model-versions/get?name=fashion&version=1", admin
    )
    tags = {t["key"]: t["value"] for t in json.loads(got)["model_version"]["tags"]}
    assert status == 200 and tags["fct.note"] == "changed"


def test_a_users_permissions_hold_on_the_page_too(auth_server):
    """READ by default: the page, but no writes; no permission on ``secret``: not on the page
    either (the page reads the store directly, so it must ask basic-auth itself)."""
    reader = (READER, READER_PW)
    assert _request(auth_server, "GET", "/fct/family/fashion", reader)[0] == 200
    status, index = _request(auth_server, "GET", "/fct/", reader)
    assert status == 200 and "family/fashion" in index and "family/secret" not in index
    for path in ("/fct/family/secret", "/fct/api/family/secret"):
        assert _request(auth_server, "GET", path, reader)[0] == 403, path
    assert _request(auth_server, "POST", SET_TAG, reader, TAG)[0] == 403
    secret = {**TAG, "name": "secret"}
    assert _request(auth_server, "POST", SET_TAG, reader, secret)[0] == 403


def test_the_plain_app_warns_that_it_is_unauthenticated(caplog, monkeypatch):
    from flask import Flask

    from fct_registry.server import UNAUTHENTICATED_WARNING, create_app

    monkeypatch.setenv("_MLFLOW_SGI_NAME", "gunicorn")  # the Flask app itself, not FastAPI's
    with caplog.at_level(logging.WARNING, logger="fct_registry.server"):
        app = create_app(Flask("plain"))
    assert "fct" in app.blueprints
    assert UNAUTHENTICATED_WARNING in caplog.text and "fct-auth" in UNAUTHENTICATED_WARNING
