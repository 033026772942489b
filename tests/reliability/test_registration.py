"""Registration under failure and concurrency: a SIGKILLed lock holder, an expired lock, and
six registrations into a brand-new SQLite store at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fct_registry.registry import tags as T
from fct_registry.registry.lock import RegistryLockError, registration_lock
from fct_registry.registry.store import ensure_schema
from tests.registry import concurrent_worker

FAMILY = "fashion"

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from mlflow import MlflowClient
    from fct_registry.registry.lock import RegistryLockError, registration_lock
    client = MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1])
    with registration_lock(client, "fashion", ttl=float(sys.argv[2])):
        print("held", flush=True)
        time.sleep(120)
    """
)


def _store(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_schema(uri)
    return uri


def _hold_in_child(uri: str, ttl: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, uri, str(ttl)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_lock_of_a_sigkilled_holder_is_taken_over_at_once(tmp_path: Path) -> None:
    uri = _store(tmp_path)
    holder = _hold_in_child(uri, ttl=600)
    client = _client(uri)
    with (
        pytest.raises(RegistryLockError, match=f"over 1 s by .*'pid': {holder.pid}"),
        registration_lock(client, FAMILY, timeout=1),
    ):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    start = time.monotonic()
    with registration_lock(client, FAMILY, timeout=10):
        waited = time.monotonic() - start
        held = client.get_registered_model(T.lock_model_name(FAMILY)).description
        assert f'"pid": {os.getpid()}' in held
    assert waited < 5, f"took {waited:.1f} s to take over a dead holder's lock"
    assert client.search_registered_models() == []  # lock and takeover guard released


def test_expired_lock_of_a_live_holder_is_taken_over(tmp_path: Path) -> None:
    uri = _store(tmp_path)
    holder = _hold_in_child(uri, ttl=1.0)
    try:
        client = _client(uri)
        start = time.monotonic()
        with registration_lock(client, FAMILY, timeout=20):
            waited = time.monotonic() - start
        assert 0.5 < waited < 10
    finally:
        holder.kill()
        holder.wait()


def test_six_concurrent_registrations_into_a_brand_new_sqlite_store(tiny_pipeline, tmp_path):
    from mlflow import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert not db.exists()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(concurrent_worker.PRELOAD)
    n = 6
    barrier = ctx.Barrier(n)
    outs = [tmp_path / f"result-{i}.json" for i in range(n)]
    procs = [
        ctx.Process(
            target=concurrent_worker.register_worker,
            args=(str(tiny_pipeline.root), uri, str(outs[i]), barrier),
        )
        for i in range(n)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
    results = [json.loads(o.read_text()) if o.exists() else {"error": "no result"} for o in outs]
    assert [r.get("error") for r in results] == [None] * n, results
    assert [p.exitcode for p in procs] == [0] * n

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(T.experiment_name(FAMILY))
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    versions = [
        mv
        for rm in client.search_registered_models()
        for mv in client.search_model_versions(f"name = '{rm.name}'")
    ]
    models = 1 + len(tiny_pipeline.raw["versions"]) + len(tiny_pipeline.raw["transformations"])
    assert len(versions) == models
    assert len(runs) == models, "one run per model: no duplicates logged and discarded"
    assert not any("fct.duplicate_of" in r.data.tags for r in runs)
    assert sum(r["created"] for r in results) == models  # each model created by one process
    logged = client.search_logged_models([experiment.experiment_id], max_results=1000)
    assert len(logged) == models
    names = {rm.name for rm in client.search_registered_models()}
    assert not any("registration-lock" in name for name in names)
