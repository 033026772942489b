"""Registration under failure and concurrency: a SIGKILLed lock holder (and its run), a lock
renewed while its holder works and taken from a hung one, and concurrent registrations into a
brand-new SQLite store at once (also with locks that live 2 s unless renewed)."""

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

from fct_registry.registry import tags as fct_tags
from fct_registry.registry.lock import LOCK_TTL_ENV, RegistryLockError, registration_lock
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
        held = client.get_registered_model(fct_tags.lock_model_name(FAMILY)).description
        assert f'"pid": {os.getpid()}' in held
    assert waited < 5, f"took {waited:.1f} s to take over a dead holder's lock"
    assert client.search_registered_models() == []  # lock and takeover guard released


def test_lock_is_renewed_while_its_holder_works_and_taken_from_a_hung_holder(
    tmp_path: Path,
) -> None:
    uri = _store(tmp_path)
    holder = _hold_in_child(uri, ttl=2.0)  # works far longer than its time to live
    try:
        client = _client(uri)
        start = time.monotonic()
        with (
            pytest.raises(RegistryLockError, match=f"'pid': {holder.pid}"),
            registration_lock(client, FAMILY, timeout=6),
        ):
            pass
        assert time.monotonic() - start >= 6, "refused only after waiting three TTLs"
        os.kill(holder.pid, signal.SIGSTOP)  # hung: its heartbeat stops, so the lock expires
        start = time.monotonic()
        with registration_lock(client, FAMILY, timeout=20):
            waited = time.monotonic() - start
        assert waited < 10
    finally:
        holder.kill()
        holder.wait()


_RUN_HOLDER = textwrap.dedent(
    """
    import sys, time
    import mlflow
    from fct_registry.registry.lock import registration_lock
    mlflow.set_tracking_uri(sys.argv[1])
    client = mlflow.MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1])
    with registration_lock(client, "fashion", key="claim", ttl=600) as lock:
        run = mlflow.start_run()
        lock.record_run(run.info.run_id)
        print(run.info.run_id, flush=True)
        time.sleep(120)
    """
)


def test_the_run_of_a_killed_holder_is_marked_failed_by_the_next_holder(tmp_path: Path) -> None:
    uri = _store(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_HOLDER, uri],
        # mlflow.set_experiment (run in-process by earlier tests) exports the active experiment
        # as MLFLOW_EXPERIMENT_ID, which names nothing in this new store.
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_EXPERIMENT_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    run_id = proc.stdout.readline().strip()
    if not run_id:  # the holder died before taking the lock: say why
        proc.wait(timeout=60)
        pytest.fail(f"the lock holder exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
    client = _client(uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert client.get_run(run_id).info.status == "RUNNING", "left running by the kill"
    with registration_lock(client, FAMILY, key="claim", timeout=10):
        assert client.get_run(run_id).info.status == "FAILED"


def _register_with_ttl(ttl: str, *args: object) -> None:
    """A registration worker whose locks live ``ttl`` seconds unless renewed ("" = default);
    with a TTL, the first model it logs takes 3 TTLs longer (a large model, a slow store)."""
    if ttl:
        os.environ[LOCK_TTL_ENV] = ttl
        from fct_registry.registry import flavor

        log_model, slowed = flavor.log_model, []

        def slow_log_model(*a: object, **k: object) -> object:
            if not slowed:
                slowed.append(True)
                time.sleep(3 * float(ttl))
            return log_model(*a, **k)

        flavor.log_model = slow_log_model
    concurrent_worker.register_worker(*args)


@pytest.mark.parametrize(
    ("n", "ttl"),
    # Six at the default TTL; three whose 6 s locks are held for 18 s and more by the first
    # model each logs: exclusive only while renewed (without the heartbeat: duplicate runs).
    [(6, ""), (3, "6")],
    ids=["default-ttl", "ttl-6s"],
)
def test_concurrent_registrations_into_a_brand_new_sqlite_store(
    tiny_pipeline, tmp_path, n: int, ttl: str
):
    from mlflow import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert not db.exists()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(concurrent_worker.PRELOAD)
    barrier = ctx.Barrier(n)
    outs = [tmp_path / f"result-{i}.json" for i in range(n)]
    procs = [
        ctx.Process(
            target=_register_with_ttl,
            args=(ttl, str(tiny_pipeline.root), uri, str(outs[i]), barrier),
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
    experiment = client.get_experiment_by_name(fct_tags.experiment_name(FAMILY))
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
