"""Upgrading galleries inside PostgreSQL + pgvector: correctness against the chain, resume after
kill -9 (of the job and of the server), no-op reruns, the advisory lock, and readers during the
view swap. Everything runs on the session's embedded server (tests/support/pgvector.py)."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fct_registry.gallery.errors import GalleryError, NonFiniteError, SchemaError
from fct_registry.gallery.pg.catalogue import alias, gallery_tables, served
from fct_registry.gallery.pg.connection import connect
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.search import vector_literal
from fct_registry.gallery.pg.tables import HnswParams, prune, rollback
from fct_registry.upgrade.pgvector import JOBS, OlderTargetError, Source, upgrade_to_pg
from fct_registry.upgrade.plan import GroupPlan, UpgradePlan
from tests.support.pgvector import (
    GemmChain,
    PgServer,
    gemm_chain,
    load_rows,
    matrix,
    read_all,
    serve_embedded,
)
from tests.upgrade import pg_worker
from tests.upgrade.conftest import (
    FAMILY,
    NEW_DIM,
    OLD_DIM,
    SIDE,
    SIDE_DIM,
    synthetic_rows,
    write_gallery,
)

pytestmark = pytest.mark.services
S_ID = "id"
SMALL_HNSW = HnswParams(m=8, ef_construction=32)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    yield from serve_embedded()


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GemmChain]:
    """``1-2``: 8+4 -> 6; ``2-2b``: 6+4 -> 6; ``3-2``: 6 -> 6 without side-info."""
    root = tmp_path_factory.mktemp("onnx")
    return {
        "1-2": gemm_chain(root / "1-2.onnx", OLD_DIM, NEW_DIM, SIDE_DIM, seed=1),
        "2-2b": gemm_chain(root / "2-2b.onnx", NEW_DIM, NEW_DIM, SIDE_DIM, seed=2),
        "3-2": gemm_chain(root / "3-2.onnx", NEW_DIM, NEW_DIM, 0, seed=3),
    }


def _plan(chain: GemmChain, source: int = 1, target: int = 2) -> UpgradePlan:
    return UpgradePlan.from_onnx(FAMILY, target, {(source, SIDE): [chain.path]}, threads=1)


def _seed(url: str, n: int, *, dim: int = 8, version: int = 1, seed: int = 0):
    rows = synthetic_rows(n, dim=dim, seed=seed)
    load_rows(url, rows.ids, rows.old, rows.side, version=version, labels=rows.labels,
              hnsw=SMALL_HNSW)  # fmt: skip
    return rows


def _upgrade(url: str, plan: UpgradePlan, batch_size: int = 64, **kw):
    source = Source.open(url)
    try:
        return upgrade_to_pg(source, PgLocation.parse(url), plan, batch_size=batch_size,
                             hnsw=SMALL_HNSW, **kw)  # fmt: skip
    finally:
        source.close()


def _worker(url: str, chain: GemmChain, out: Path, **kw) -> tuple[Any, Any]:
    """A forkserver child running the upgrade (tests/upgrade/pg_worker.py)."""
    return pg_worker.start(url, chain.path, out, **kw)


def _finish(proc: Any, out: Path, timeout: float = 120) -> dict[str, Any]:
    proc.join(timeout)
    assert proc.exitcode == 0, proc.exitcode
    return pg_worker.result(out)


# --- correctness ---------------------------------------------------------------------------------


def test_upgrade_swaps_to_the_chain_output_and_keeps_the_old_table(
    pg_server: PgServer, chains: dict[str, GemmChain]
) -> None:
    url = pg_server.gallery()
    rows = _seed(url, 300)
    report = _upgrade(url, _plan(chains["1-2"]))
    assert report.rows == 300 and report.resumed_rows == 0 and not report.already_complete
    table = read_all(url)
    order = np.argsort(rows.ids)
    assert table.column("id").to_pylist() == [rows.ids[i] for i in order]
    want = chains["1-2"].numpy(rows.old[order], rows.side[order])
    np.testing.assert_allclose(matrix(table, "embedding"), want, rtol=1e-5, atol=1e-5)
    assert np.array_equal(matrix(table, "side_info"), rows.side[order])  # never changed
    assert set(table.column("model_version").to_pylist()) == {2}
    assert table.column("label").to_pylist() == rows.labels[order].tolist()
    assert set(table.column("source_uri").to_pylist()) == {"test://rows"}  # carried through
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc)) as conn:
        info = served(conn, loc)
        assert info.table == report.table and info.versions == {2: 300}
        assert info.embedding_dim == NEW_DIM
        assert info.provenance["plan"]["chains"][0]["steps"][0]["onnx_sha256"]
        assert alias(conn, loc.gallery)[1] == report.previous_table  # kept for rollback
        with conn.cursor() as cur:
            cur.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%hnsw%%'",
                (report.table,),
            )
            assert "vector_l2_ops" in cur.fetchone()[0]  # the family's distance (l2)


def test_rerun_after_success_does_nothing(
    pg_server: PgServer, chains: dict[str, GemmChain]
) -> None:
    url = pg_server.gallery()
    _seed(url, 100)
    first = _upgrade(url, _plan(chains["1-2"]))
    before = read_all(url)
    again = _upgrade(url, _plan(chains["1-2"]))
    assert again.already_complete and again.table == first.table
    assert read_all(url).equals(before)


def test_rollback_and_prune(pg_server: PgServer, chains: dict[str, GemmChain]) -> None:
    url = pg_server.gallery()
    _seed(url, 50)
    report = _upgrade(url, _plan(chains["1-2"]))
    loc = PgLocation.parse(url)
    assert rollback(loc) == (report.table, report.previous_table)
    assert set(read_all(url).column("model_version").to_pylist()) == {1}
    assert rollback(loc) == (report.previous_table, report.table)  # and forward again
    assert prune(loc, dry_run=True) == [report.previous_table]
    assert prune(loc) == [report.previous_table]
    with pytest.raises(GalleryError, match="no earlier table"):
        rollback(loc)
    assert set(read_all(url).column("model_version").to_pylist()) == {2}


def test_upgrade_rollback_upgrade_prune_cycle(
    pg_server: PgServer, chains: dict[str, GemmChain]
) -> None:
    """After a rollback an upgrade is judged by what the view serves: it serves the kept table
    again (the job's record alone said "done"), and after a prune it recomputes."""
    url = pg_server.gallery()
    _seed(url, 80)
    loc = PgLocation.parse(url)
    plan = _plan(chains["1-2"])
    first = _upgrade(url, plan)
    upgraded = read_all(url)
    assert set(upgraded.column("model_version").to_pylist()) == {2}

    rollback(loc)
    assert set(read_all(url).column("model_version").to_pylist()) == {1}
    again = _upgrade(url, plan)
    assert again.reserved and not again.already_complete and again.table == first.table
    assert again.copy_seconds == 0 and again.previous_table == first.previous_table
    assert read_all(url).equals(upgraded)  # the same rows, nothing recomputed
    assert _upgrade(url, plan).already_complete  # and now there is nothing to do

    rollback(loc)
    assert prune(loc) == [first.table]  # drops the upgraded table and its job
    recomputed = _upgrade(url, plan)
    assert not recomputed.reserved and recomputed.upgraded_rows == 80
    assert read_all(url).equals(upgraded)
    assert prune(loc) == [first.previous_table]
    assert _upgrade(url, plan).already_complete
    assert read_all(url).equals(upgraded)


def test_a_done_job_whose_table_was_dropped_by_hand_starts_over(
    pg_server: PgServer, chains: dict[str, GemmChain]
) -> None:
    url = pg_server.gallery()
    _seed(url, 40)
    loc = PgLocation.parse(url)
    plan = _plan(chains["1-2"])
    first = _upgrade(url, plan)
    upgraded = read_all(url)
    rollback(loc)
    with contextlib.closing(connect(loc)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE {first.table}")
        conn.commit()
    again = _upgrade(url, plan)
    assert not again.reserved and again.upgraded_rows == 40
    assert read_all(url).equals(upgraded)


def test_parquet_source_into_pgvector(
    pg_server: PgServer, chains: dict[str, GemmChain], tmp_path: Path
) -> None:
    rows = synthetic_rows(150)
    write_gallery(tmp_path / "g", rows, shard_rows=40, row_group_rows=16)
    url = pg_server.gallery()
    source = Source.open(str(tmp_path / "g"))
    report = upgrade_to_pg(source, PgLocation.parse(url), _plan(chains["1-2"]),
                           batch_size=32, hnsw=SMALL_HNSW)  # fmt: skip
    assert report.rows == 150 and report.previous_table is None
    table = read_all(url)
    order = np.argsort(rows.ids)
    want = chains["1-2"].numpy(rows.old[order], rows.side[order])
    np.testing.assert_allclose(matrix(table, "embedding"), want, rtol=1e-5, atol=1e-5)


def test_killed_upgrade_from_parquet_resumes_on_a_batch_boundary(
    pg_server: PgServer, chains: dict[str, GemmChain], tmp_path: Path
) -> None:
    rows = synthetic_rows(300)
    write_gallery(tmp_path / "g", rows, shard_rows=70, row_group_rows=16)
    url, ref = pg_server.gallery(), pg_server.gallery()
    src = str(tmp_path / "g")
    for gallery, hook, name in ((ref, None, "ref"), (url, "kill:batch:3", "killed")):
        proc, _ = _worker(gallery, chains["1-2"], tmp_path / f"{name}.json", batch_size=32,
                          hook=hook, source=src)  # fmt: skip
        proc.join(120)
    assert proc.exitcode == -9 and _job_state(PgLocation.parse(url))[1] > 0
    proc, _ = _worker(url, chains["1-2"], tmp_path / "resumed.json", batch_size=32, source=src)
    outcome = _finish(proc, tmp_path / "resumed.json")
    assert outcome["rc"] == 0 and 0 < outcome["report"]["resumed_rows"] < 300, outcome
    got, want = read_all(url), read_all(ref)
    assert got[S_ID].to_pylist() == want[S_ID].to_pylist()
    assert np.array_equal(matrix(got, "embedding"), matrix(want, "embedding"))


# --- bad input -----------------------------------------------------------------------------------


def test_upgrade_to_an_older_version_is_refused(
    pg_server: PgServer, chains: dict[str, GemmChain]
) -> None:
    url = pg_server.gallery()
    _seed(url, 20, dim=NEW_DIM, version=2)
    plan = UpgradePlan.from_onnx(FAMILY, 1, {(2, SIDE): [chains["3-2"].path]})
    with pytest.raises(OlderTargetError, match=r"tiny@2 rows, newer than the target tiny@1.*"
                       r"rollback"):  # fmt: skip
        _upgrade(url, plan)
    assert set(read_all(url).column("model_version").to_pylist()) == {2}  # untouched


def test_dimension_mismatch_is_refused_before_writing(
    pg_server: PgServer, chains: dict[str, GemmChain]
) -> None:
    url = pg_server.gallery()
    _seed(url, 20, dim=NEW_DIM)  # 6-d rows claiming version 1, whose chain reads 8-d
    with pytest.raises(SchemaError, match=r"embeddings are 6-d, but .* reads 8-d"):
        _upgrade(url, _plan(chains["1-2"]))
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc)) as conn:
        assert [t.table for t in gallery_tables(conn, loc.gallery)] == [
            served(conn, loc).table
        ]  # no new table was created


class _NanRunner:
    """A chain whose output is NaN for one row (what an overflowing transformation gives)."""

    old_dim, side_info_dim, new_dim = 8, 4, NEW_DIM

    def __call__(self, old: np.ndarray, side: np.ndarray | None) -> np.ndarray:
        out = np.zeros((len(old), NEW_DIM), dtype=np.float32)
        out[old[:, 0] == old[:, 0].max()] = np.nan
        return out


def test_nan_from_the_chain_stops_the_upgrade_and_names_the_row(
    pg_server: PgServer, chains: dict[str, GemmChain]
) -> None:
    url = pg_server.gallery()
    _seed(url, 40)
    plan = _plan(chains["1-2"])
    routes = {k: GroupPlan(k, r.path, r.steps, _NanRunner()) for k, r in plan.routes.items()}
    bad = UpgradePlan(plan.family, plan.target, plan.target_dim, routes)
    with pytest.raises(NonFiniteError, match=r"embedding of row \d+ \(id 'item-\d+'\) holds nan"):
        _upgrade(url, bad, batch_size=16)
    assert set(read_all(url).column("model_version").to_pylist()) == {1}  # still served


def test_server_killed_mid_upgrade_then_resumed(
    pg_server: PgServer, chains: dict[str, GemmChain], tmp_path: Path
) -> None:
    """kill -9 of the PostgreSQL server (the session's: restarted here) while an upgrade runs:
    the job fails with a message saying to rerun, and the rerun finishes it."""
    url, ref = pg_server.gallery(), pg_server.gallery()
    _seed(url, 400)
    _seed(ref, 400)
    _upgrade(ref, _plan(chains["1-2"]), batch_size=40)
    proc, ready = _worker(url, chains["1-2"], tmp_path / "1.json", batch_size=40,
                          hook="sleep:batch:2:1.5")  # fmt: skip
    assert ready.wait(60)
    loc = PgLocation.parse(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # batch 2 committed, the job sleeps before batch 3
        if (_job_state(loc) or ("", 0))[1] >= 120:
            break
        time.sleep(0.05)
    os.kill(pg_server.postmaster_pid(), 9)
    first = _finish(proc, tmp_path / "1.json")
    assert first["rc"] == 2, first
    assert "lost the connection to PostgreSQL" in first["stderr"]
    assert "rerun the same command" in first["stderr"]
    for _ in range(50):  # backends notice the postmaster's death and exit, then it restarts
        with contextlib.suppress(Exception):
            pg_server.start()
            break
        time.sleep(0.2)
    proc, _ = _worker(url, chains["1-2"], tmp_path / "2.json", batch_size=40)
    second = _finish(proc, tmp_path / "2.json")
    assert second["rc"] == 0, second
    assert 120 <= second["report"]["resumed_rows"] < 400
    got, want = read_all(url), read_all(ref)
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    assert np.array_equal(matrix(got, "embedding"), matrix(want, "embedding"))


def _job_state(loc: PgLocation) -> tuple[str, int] | None:
    with contextlib.closing(connect(loc)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT to_regclass('{JOBS}')")
        if cur.fetchone()[0] is None:
            return None
        cur.execute(f"SELECT state, rows_done FROM {JOBS} WHERE gallery = %s", (loc.gallery,))
        row = cur.fetchone()
    return None if row is None else (row[0], int(row[1]))


# --- kill -9 at random moments -------------------------------------------------------------------


def test_five_random_kills_then_resume_equal_an_uninterrupted_run(
    pg_server: PgServer, chains: dict[str, GemmChain], tmp_path: Path
) -> None:
    n = 1500
    ref = pg_server.gallery()
    _seed(ref, n, seed=7)
    proc, ready = _worker(ref, chains["1-2"], tmp_path / "ref.json")
    assert ready.wait(60)
    start = time.perf_counter()
    assert _finish(proc, tmp_path / "ref.json")["rc"] == 0
    duration = time.perf_counter() - start
    want = read_all(ref)
    rng = random.Random(13)
    interrupted = 0
    for run in range(5):
        url = pg_server.gallery()
        _seed(url, n, seed=7)
        proc, ready = _worker(url, chains["1-2"], tmp_path / f"{run}a.json")
        assert ready.wait(60)
        delay = rng.uniform(0.05, 0.95) * duration
        time.sleep(delay)
        proc.kill()  # SIGKILL
        proc.join(30)
        state = _job_state(PgLocation.parse(url))
        interrupted += state is None or state[0] != "done"
        proc, _ = _worker(url, chains["1-2"], tmp_path / f"{run}b.json")  # the same job again
        outcome = _finish(proc, tmp_path / f"{run}b.json")
        assert outcome["rc"] == 0, (run, delay, state, outcome)
        got = read_all(url)
        ids = got.column("id").to_pylist()
        assert len(ids) == len(set(ids)) == n, (run, delay, state)  # none lost, none twice
        assert ids == want.column("id").to_pylist()
        assert np.array_equal(matrix(got, "embedding"), matrix(want, "embedding")), run
        assert got.column("model_version").to_pylist() == [2] * n
    assert interrupted >= 3, f"only {interrupted} of 5 kills landed before the swap"


# --- concurrency ---------------------------------------------------------------------------------


def test_a_concurrent_upgrade_of_the_same_gallery_fails_clearly(
    pg_server: PgServer, chains: dict[str, GemmChain], tmp_path: Path
) -> None:
    url = pg_server.gallery()
    _seed(url, 200)
    loc = PgLocation.parse(url)
    first, ready = _worker(url, chains["1-2"], tmp_path / "1.json", hook="sleep:batch:0:3")
    assert ready.wait(60)
    deadline = time.monotonic() + 30
    while _job_state(loc) is None and time.monotonic() < deadline:  # it holds the lock now
        time.sleep(0.05)
    second, _ = _worker(url, chains["1-2"], tmp_path / "2.json", lock_wait=0.5)
    refused = _finish(second, tmp_path / "2.json")
    assert refused["rc"] == 3, refused
    assert f"another job is writing gallery '{loc.gallery}'" in refused["stderr"]
    assert "server pid" in refused["stderr"] and "holds its lock" in refused["stderr"]
    assert _finish(first, tmp_path / "1.json")["rc"] == 0
    assert set(read_all(url).column("model_version").to_pylist()) == {2}


def test_readers_during_swaps_never_see_a_mixed_or_empty_gallery(
    pg_server: PgServer, chains: dict[str, GemmChain]
) -> None:
    """A reader queries through the view while the gallery is upgraded (2 -> 3, same width, so
    the same query vector fits both) and rolled back and forth; every answer must come from
    exactly one complete version."""
    n = 400
    url = pg_server.gallery()
    _seed(url, n, dim=NEW_DIM, version=2)
    loc = PgLocation.parse(url)
    seen: list[tuple[int, int, int]] = []
    errors: list[str] = []
    stop = threading.Event()
    query = vector_literal(np.ones(NEW_DIM, dtype=np.float32))
    g = loc.gallery

    def reader() -> None:
        conn = connect(loc, autocommit=True)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    try:  # one statement: one snapshot, as a client's query has
                        cur.execute(
                            f"""WITH s AS (SELECT count(*) AS c, min(model_version) AS lo,
                                                  max(model_version) AS hi FROM {g}),
                                     k AS (SELECT array_agg(model_version) AS v FROM (
                                           SELECT model_version FROM {g}
                                           ORDER BY embedding <-> %s::vector LIMIT 10) t)
                                SELECT c, lo, hi, v FROM s, k""",
                            (query,),
                        )
                        count, lo, hi, knn = cur.fetchone()
                        knn = set(knn or [])
                    except Exception as exc:  # any error is a failed read
                        errors.append(repr(exc))
                        continue
                    seen.append((count, lo, hi))
                    if count != n or lo != hi or knn != {lo}:
                        errors.append(f"mixed/empty: count {count}, versions {lo}..{hi}, {knn}")
        finally:
            conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.2)
        _upgrade(url, UpgradePlan.from_onnx(FAMILY, 3, {(2, SIDE): [chains["2-2b"].path]}))
        for _ in range(6):
            rollback(loc)
            time.sleep(0.05)
    finally:
        time.sleep(0.2)
        stop.set()
        thread.join(30)
    assert not errors, errors[:5]
    versions = [lo for _, lo, _ in seen]
    assert {2, 3} <= set(versions), "the reader did not run across the swap"
    changes = sum(a != b for a, b in itertools.pairwise(versions))
    assert changes >= 3  # it saw several swaps, each a clean switch
