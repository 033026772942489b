"""The resumable-job core (fct_registry.jobs): progress files, markers, fingerprints, liveness,
and the guard that the jobs keep no copies of these helpers."""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fct_registry.errors import FctError
from fct_registry.jobs import (
    JobFiles,
    batch_hook,
    fingerprint,
    intact,
    json_bytes,
    progress_bar,
    reached,
    read_json,
)
from fct_registry.liveness import holder_gone, pid_alive

PACKAGE = Path(__file__).resolve().parents[2] / "fct_registry"
HOME = PACKAGE / "liveness.py"  # the one definition of pid_alive


class MemoryStore:
    """A JobStore in a dict; ``sha256`` and ``read_bytes`` of a missing name raise FctError, as
    the real storages' StorageError does."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def list(self) -> list[str]:
        return sorted(self.files)

    def read_bytes(self, name: str) -> bytes:
        if name not in self.files:
            raise FctError(f"{name} does not exist")
        return self.files[name]

    def write_bytes(self, name: str, data: bytes) -> None:
        self.files[name] = data

    def delete(self, name: str) -> None:
        self.files.pop(name, None)

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.read_bytes(name)).hexdigest()


def test_markers_count_only_for_this_job_and_expected_fields() -> None:
    store, files = MemoryStore(), JobFiles("_fct_demo")
    files.write_job(store, {"fingerprint": "a"})
    files.mark(store, "part-00000.parquet", {"fingerprint": "a", "source_sha256": "s0"})
    assert files.read_job(store) == {"fingerprint": "a"}
    assert files.marked(store, "part-00000.parquet", "a", source_sha256="s0") is not None
    assert files.marked(store, "part-00000.parquet", "b") is None  # another job's
    assert files.marked(store, "part-00000.parquet", "a", source_sha256="s1") is None
    assert files.marked(store, "part-00001.parquet", "a") is None  # never marked
    store.files[files.marker("part-00000.parquet")] = b'{"fingerprint": "a", "sou'  # torn
    assert files.marked(store, "part-00000.parquet", "a") is None


def test_read_json_refuses_torn_missing_and_non_objects() -> None:
    store = MemoryStore()
    store.write_bytes("ok.json", json_bytes({"b": 1, "a": [2]}))
    store.write_bytes("list.json", b"[1, 2]")
    store.write_bytes("torn.json", b'{"a": ')
    assert read_json(store, "ok.json") == {"a": [2], "b": 1}
    assert [read_json(store, n) for n in ("list.json", "torn.json", "gone.json")] == [None] * 3
    # what every job wrote before: indented, sorted, one newline
    assert json_bytes({"b": 1, "a": 2}) == b'{\n  "a": 2,\n  "b": 1\n}\n'


def test_intact_checks_the_recorded_bytes() -> None:
    store = MemoryStore()
    store.write_bytes("part.parquet", b"rows")
    good = hashlib.sha256(b"rows").hexdigest()
    assert intact(store, "part.parquet", good)
    assert not intact(store, "part.parquet", "0" * 64)
    assert not intact(store, "other.parquet", good)  # missing


def test_clean_removes_every_progress_file_and_nothing_else() -> None:
    store, files = MemoryStore(), JobFiles("_fct_demo")
    store.write_bytes("part-00000.parquet", b"x")
    store.write_bytes("manifest.json", b"{}")
    files.write_job(store, {"fingerprint": "a"})
    files.mark(store, "part-00000.parquet", {"fingerprint": "a"})
    deleted: list[str] = []
    delete = store.delete
    store.delete = lambda name: (deleted.append(name), delete(name))  # type: ignore[method-assign]
    files.clean(store)
    assert store.list() == ["manifest.json", "part-00000.parquet"]
    assert deleted[-1] == files.job_file  # last: a run killed while cleaning is still this job


def test_commit_marks_between_the_shard_and_marker_points() -> None:
    store, files, seen = MemoryStore(), JobFiles("_fct_demo"), []

    def hook(point: str) -> None:
        seen.append((point, files.marker("s") in store.files))

    files.commit(store, "s", 3, {"fingerprint": "a"}, hook)
    batch_hook(3, hook, lambda rows: seen.append(("rows", rows)))(7, 10)
    assert seen == [("shard:3", False), ("marker:3", True), ("rows", 10), ("batch:3:7", True)]


def test_fingerprints_are_the_ones_earlier_runs_recorded() -> None:
    """Changing them would make every interrupted job and finished backfill unrecognisable."""
    payload = ["plan", "models:/f/3", 8192, None]
    assert fingerprint(payload) == hashlib.sha256(json.dumps(payload).encode()).hexdigest()
    spec = {"b": 1, "a": {"d": 2, "c": 3}}
    expected = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    assert fingerprint(spec) == expected


def test_liveness_of_holders() -> None:
    assert pid_alive(os.getpid())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_alive(dead.pid)
    here = socket.gethostname()
    assert holder_gone({"host": here, "pid": dead.pid})
    assert not holder_gone({"host": here, "pid": os.getpid()})
    assert not holder_gone({"host": here + "-elsewhere", "pid": dead.pid})  # never guessed
    assert not holder_gone({"host": here, "pid": "1"}) and not holder_gone(None)


def test_disabled_progress_bar_takes_every_call() -> None:
    bar = progress_bar(False, total=10, postfix="shards 0/1")
    bar.update(3)
    bar.set_postfix_str("shards 1/1")
    bar.close()


# The helpers each job used to define for itself; they live in fct_registry.jobs now (process
# liveness in fct_registry.liveness, below storage, which checks its temporaries' writers).
FORMER_COPIES = {
    "marker_name",
    "_read_json",
    "_intact",
    "_clean_progress",
    "_reached",
    "_NoBar",
    "pid_alive",
    "_pid_alive",
}


def test_no_job_keeps_its_own_copy_of_the_core_helpers() -> None:
    copies = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (path.parent.name == "jobs" and path.parent.parent == PACKAGE) or path == HOME:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            defined = isinstance(node, ast.FunctionDef | ast.ClassDef)
            if defined and node.name in FORMER_COPIES:
                copies.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert copies == [], "use fct_registry.jobs instead of: " + ", ".join(copies)


@pytest.mark.parametrize(
    "module",
    [
        "fct_registry.upgrade.job",
        "fct_registry.upgrade.pgvector",
        "fct_registry.gallery.embed_job",
        "fct_registry.backfill.run",
    ],
)
def test_every_job_has_its_own_replaceable_fault_hook(module: str) -> None:
    """tests/support/kill_at.py replaces ``<module>._reached``; the job must call it through its own
    module global, so replacing one job's hook leaves the others alone."""
    mod = importlib.import_module(module)
    assert mod._reached is reached
    source = Path(mod.__file__ or "").read_text()
    assert "_reached(" in source
