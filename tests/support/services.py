"""Session fixtures for the production-like setup: PostgreSQL, moto_server (S3) and an MLflow
tracking server using both, all on 127.0.0.1.

Import the fixtures into a ``conftest.py`` (``from tests.support.services import
mlflow_server``...).
Each service is started once per test session and stopped at teardown by the PID it was started
with; a missing binary skips the tests that need it, with the reason. PostgreSQL is shared with
the machine: it is started only when down, stopped only if this session started it and nobody
else is connected, and each session uses its own role-owned database, dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_VERSION, PG_CLUSTER = "15", "main"
PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USER, PG_PASSWORD = "fct_test", "fct-test-pw"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
VENV_BIN = Path(sys.executable).parent


def _binary(name: str) -> str:
    """A binary from the test's virtualenv first, then PATH; skip the test when absent."""
    local = VENV_BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found; install the test dependencies (`make setup-test`)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with status {proc.returncode}:\n{tail}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{tail}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process we started (its own process group: children go too), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# --- PostgreSQL ----------------------------------------------------------------------------------


def _psql(sql: str, db: str = "postgres") -> str:
    """Run SQL as the postgres superuser (the cluster's peer authentication)."""
    psql = _binary("psql")
    cmd = [psql, "-v", "ON_ERROR_STOP=1", "-qAt", "-d", db, "-c", sql]
    if os.geteuid() == 0:
        cmd = ["su", "postgres", "-c", " ".join(_quote(c) for c in cmd)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _cluster_status() -> str:
    out = subprocess.run(
        [_binary("pg_lsclusters"), "-h"], capture_output=True, text=True, timeout=30
    )
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields[:2] == [PG_VERSION, PG_CLUSTER]:
            return fields[3]
    pytest.skip(
        f"PostgreSQL cluster {PG_VERSION}/{PG_CLUSTER} not found (pg_lsclusters); "
        "install postgresql (`make setup-test`)"
    )
    raise AssertionError  # unreachable


def _postmaster_pid() -> int | None:
    pidfile = Path(f"/var/lib/postgresql/{PG_VERSION}/{PG_CLUSTER}/postmaster.pid")
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(pidfile.read_text().splitlines()[0])
    return None


@dataclass(frozen=True)
class Postgres:
    database: str
    user: str = PG_USER
    password: str = PG_PASSWORD

    @property
    def uri(self) -> str:
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@{PG_HOST}:{PG_PORT}/{self.database}"
        )


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A fresh database owned by a test role on the machine's PostgreSQL 15 cluster."""
    _binary("pg_ctlcluster")
    started = False
    if _cluster_status() != "online":
        out = subprocess.run(
            [_binary("pg_ctlcluster"), PG_VERSION, PG_CLUSTER, "start"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            pytest.skip(f"cannot start PostgreSQL: {out.stderr.strip()}")
        started = True
    wait_until(
        lambda: socket.create_connection((PG_HOST, PG_PORT), 1).close() or True, 30, "PostgreSQL"
    )
    db = f"fct_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    if _psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{PG_USER}'") != "1":
        _psql(f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'")
    _psql(f"CREATE DATABASE {db} OWNER {PG_USER}")
    try:
        yield Postgres(db)
    finally:
        with contextlib.suppress(RuntimeError):
            _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        others = (
            _psql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname IS NOT NULL "
                "AND pid <> pg_backend_pid()"
            )
            if started
            else "1"
        )
        pid = _postmaster_pid()
        if started and others == "0" and pid:
            os.kill(pid, signal.SIGINT)  # fast shutdown of the cluster this session started


# --- S3 (moto_server) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def env(self) -> dict[str, str]:
        return {
            **AWS_ENV,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            **{
                "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
            },
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    """moto_server on a free loopback port, with one bucket."""
    binary = _binary("moto_server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), 30, "moto_server", proc, log)
        s3 = S3(endpoint, "fct-artifacts")
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        stop(proc)


# --- MLflow tracking server ----------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowServer:
    url: str
    s3: S3
    prefix: str
    log: Path


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: Postgres, moto_s3: S3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """A light MLflow server: PostgreSQL backend store, S3 (moto) artifacts it proxies."""
    log = tmp_path_factory.mktemp("mlflow-server") / "server.log"
    prefix = "mlflow"
    env = {**os.environ, **moto_s3.env()}
    env.pop("MLFLOW_TRACKING_URI", None)
    artifacts = ["--artifacts-destination", f"s3://{moto_s3.bucket}/{prefix}", "--serve-artifacts"]
    proc, url = start_ui(postgres.uri, log, env=env, extra=artifacts, name="mlflow server")
    try:
        yield MlflowServer(url, moto_s3, prefix, log)
    finally:
        stop(proc)


def start_ui(
    backend_store_uri: str,
    log: Path,
    app_name: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90,
    extra: Sequence[str] = (),
    name: str = "mlflow ui",
) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on a local store as ``make ui`` runs it (light: one worker; with
    ``app_name``, e.g. ``fct``, that app's pages too; ``extra``: more server options); the
    caller stops it with :func:`stop`."""
    binary = _binary("mlflow")
    port = free_port()
    env = {**(os.environ if env is None else env), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        binary,
        "server",
        *(["--app-name", app_name] if app_name else []),
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend_store_uri,
        *extra,
    ]
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/health"), timeout, name, proc, log)
    except RuntimeError:
        stop(proc)
        raise
    return proc, url


def redact_check(text: str, secret: str) -> list[str]:
    """Lines of ``text`` containing ``secret`` (for no-credential assertions)."""
    return [line for line in text.splitlines() if re.search(re.escape(secret), line)]


def private_ray() -> Iterator[None]:
    """The body of a Ray test module's fixture: one private local Ray (2 CPUs), shut down
    after the module. Ray is optional, so it is imported here, once the module has it."""
    import logging

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
