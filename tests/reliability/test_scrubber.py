"""The one credential scrubber: URIs in text, in every logger's records, and the store URI
normalisation users rely on (``postgresql://`` as written)."""

from __future__ import annotations

import io
import logging

import pytest

from fct_registry import _redact
from fct_registry.cli import RETRY_DEFAULTS, main
from fct_registry.registry.store import normalize_uri, resolve_tracking_uri


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        (
            "View run x at: http://u:PW@host:5000/#/runs/1",
            "View run x at: http://host:5000/#/runs/1",
        ),
        ("postgresql://fct:PW@db/mlflow", "postgresql://db/mlflow"),
        ("s3://bucket/k?X-Amz-Signature=PW&x=1", "s3://bucket/k?X-Amz-Signature=***&x=1"),
        ("'https://tok@h/a' and \"http://a:b@c\"", "'https://h/a' and \"http://c\""),
        ("no uri here", "no uri here"),
    ],
)
def test_redact(text: str, safe: str) -> None:
    assert _redact.redact(text) == safe


def test_every_logger_is_scrubbed_once_installed() -> None:
    _redact.install()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    for name in ("mlflow.tracking.client", "urllib3.connectionpool", "fct_registry.x"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            logger.warning("retrying %s", "http://user:PW-SENTINEL@127.0.0.1:9/api")
        finally:
            logger.removeHandler(handler)
    text = out.getvalue()
    assert text.count("http://127.0.0.1:9/api") == 3 and "PW-SENTINEL" not in text


@pytest.mark.parametrize(
    ("uri", "normal"),
    [
        ("postgresql://u:pw@h/db", "postgresql+psycopg2://u:pw@h/db"),
        ("postgres://u:pw@h/db", "postgresql+psycopg2://u:pw@h/db"),
        ("postgresql+psycopg2://u:pw@h/db", "postgresql+psycopg2://u:pw@h/db"),
        ("http://h:5000", "http://h:5000"),
    ],
)
def test_postgresql_uris_as_users_write_them(uri: str, normal: str) -> None:
    assert normalize_uri(uri) == normal
    assert resolve_tracking_uri(uri) == normal


def test_cli_sets_a_bounded_retry_budget_and_no_run_links(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (*RETRY_DEFAULTS, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # a user's own setting wins
    with pytest.raises(SystemExit):
        main(["--version"])
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == RETRY_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"]
    )
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
