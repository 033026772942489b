"""Secret sentinels across every command: a password in the tracking URI never reaches any
output, log line, tag, description, parameter or artifact; failures are one clean line.

The registry is PostgreSQL 15, written the way users write it (``postgresql://u:pw@host/db``,
no driver named), with a role whose password is the sentinel. Every command runs in-process
through ``fct_registry.cli.main`` with stdout, stderr and all logging (DEBUG, every logger)
captured. Then an unreachable ``http://user:SENTINEL@...`` server: every registry command ends
in bounded time with rc 2 and no traceback.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import uuid
from pathlib import Path

import pytest

from fct_registry.cli import main
from tests.support.services import _psql, free_port

pytestmark = pytest.mark.services

SENTINEL = f"Sent1nel-{uuid.uuid4().hex[:10]}"
USER = f"fct_sentinel_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def sentinel_db(postgres) -> str:
    db = f"fct_sentinel_{uuid.uuid4().hex[:8]}"
    _psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{SENTINEL}'")
    _psql(f"CREATE DATABASE {db} OWNER {USER}")
    try:
        yield f"postgresql://{USER}:{SENTINEL}@127.0.0.1:5432/{db}"
    finally:
        with contextlib.suppress(RuntimeError):
            _psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            _psql(f"DROP ROLE IF EXISTS {USER}")


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = int(exc.code or 0)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return rc, out.getvalue()


def _files_text(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _database_text(uri: str) -> str:
    import sqlalchemy

    from fct_registry.registry.store import normalize_uri

    engine = sqlalchemy.create_engine(normalize_uri(uri), poolclass=sqlalchemy.pool.NullPool)
    parts = []
    try:
        with engine.connect() as conn:
            for table in sqlalchemy.inspect(conn).get_table_names():
                for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                    parts.append(repr(tuple(row)))
    finally:
        engine.dispose()
    return "\n".join(parts)


def test_no_sentinel_anywhere_across_all_commands(
    sentinel_db: str, tiny_pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) lands here
    project = tiny_pipeline.copy_to(tmp_path / "project")
    params, outputs = str(project.root / "params.yaml"), str(project.root / "outputs")
    images = str(project.root / "outputs" / "data" / "test.safetensors")
    uri = sentinel_db
    commands = {
        "register": ["register", "--params", params, "--outputs", outputs],
        "resolve": ["resolve", "fashion@1", "fashion@3", "--json"],
        "graph": ["graph", "fashion", "--log-to-mlflow", "--out", str(tmp_path / "g.png")],
        "embed": [
            "embed", "--model", "fashion@1", "--images", images, "--limit", "64",
            "--out", str(tmp_path / "g1"), "--device", "cpu",
        ],
        "upgrade": [
            "upgrade", "--gallery", str(tmp_path / "g1"), "--to", "fashion@3",
            "--out", str(tmp_path / "g3"), "--no-progress",
        ],
        "search": [
            "search", "--gallery", str(tmp_path / "g3"), "--query-gallery", str(tmp_path / "g3"),
            "--exclude-self", "--limit", "3",
        ],
        "gate": [
            "gate", "--candidate", "fashion@2", "--baseline", "fashion@1", "--params", params,
            "--outputs", outputs, "--device", "cpu", "--json-out", str(tmp_path / "gate.json"),
        ],
    }  # fmt: skip
    texts: dict[str, str] = {}
    for name, argv in commands.items():
        rc, text = _run([*argv, "--tracking-uri", uri] if name != "search" else argv)
        texts[name] = text
        assert rc in ((0, 1) if name == "gate" else (0,)), f"{name}: rc {rc}\n{text[-3000:]}"
    # The commands really did their work (a sentinel test that ran nothing would pass).
    assert (tmp_path / "g3" / "manifest.json").is_file() and (tmp_path / "g.png").is_file()
    stores = _database_text(uri)
    assert "fashion-transformations" in stores and len(stores) > 10_000
    artifacts = {**_files_text(tmp_path / "mlruns"), **_files_text(tmp_path / "g3")}
    assert len(artifacts) > 10
    leaks = [f"{name} output" for name, text in texts.items() if SENTINEL in text]
    leaks += ["database"] if SENTINEL in stores or USER + ":" in stores else []
    leaks += [path for path, data in artifacts.items() if SENTINEL.encode() in data]
    leaks += [path for path, data in _files_text(tmp_path).items() if SENTINEL.encode() in data]
    assert leaks == []


def test_unreachable_server_fails_fast_and_clean(tmp_path: Path, tiny_pipeline) -> None:
    url = f"http://fct-user:{SENTINEL}@127.0.0.1:{free_port()}"
    params = str(tiny_pipeline.root / "params.yaml")
    outputs = str(tiny_pipeline.root / "outputs")
    commands = {
        "register": ["register", "--params", params, "--outputs", outputs],
        "resolve": ["resolve", "fashion@1", "fashion@3"],
        "graph": ["graph", "fashion", "--out", str(tmp_path / "g.png")],
        "embed": ["embed", "--model", "fashion@1", "--images", "x", "--out", str(tmp_path / "e")],
        "upgrade": ["upgrade", "--gallery", str(tmp_path), "--to", "fashion@3", "--out", "o"],
        "gate": ["gate", "--candidate", "fashion@2", "--baseline", "fashion@1",
                 "--params", params, "--outputs", outputs],
    }  # fmt: skip
    for name, argv in commands.items():
        start = time.monotonic()
        rc, text = _run([*argv, "--tracking-uri", url])
        took = time.monotonic() - start
        assert rc == 2, f"{name}: rc {rc}\n{text[-2000:]}"
        assert SENTINEL not in text and "Traceback" not in text, f"{name}:\n{text[-3000:]}"
        assert "error:" in text
        assert took < 60, f"{name} retried for {took:.0f} s"
