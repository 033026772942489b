"""Two upgrades into one ``--out``: exactly one proceeds, the other fails naming the holder.

The race is forced by widening the window between inspecting the destination and writing the job
file (the job's ``_reached("inspected")`` hook, replaced here as ``tests/support/kill_at.py``
does; the library holds no fault injection), and run 20 times. Both runs are forked from this
process after a barrier, so they start together.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from fct_registry.gallery import Gallery, open_storage
from fct_registry.gallery.manifest import MANIFEST
from fct_registry.jobs.lease import LeaseHeldError
from fct_registry.upgrade import UpgradePlan, job, upgrade_gallery
from fct_registry.upgrade.job import DestinationError
from fct_registry.upgrade.lease import LEASE, upgrade_lease
from tests.upgrade.conftest import (
    FAMILY,
    S3,
    SIDE,
    OnnxChain,
    snapshot,
    synthetic_rows,
    write_gallery,
)

TRIALS = 20
WINDOW_S = 0.3
CTX = mp.get_context("fork")


@pytest.fixture(scope="module")
def plan(chains: dict[str, OnnxChain]) -> UpgradePlan:
    return UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [chains["1-2"].path], (2, SIDE): []})


def _racer(src: str, dst: str, plan: UpgradePlan, barrier, results) -> None:
    def widened(point: str) -> None:
        if point == "inspected":
            time.sleep(WINDOW_S)

    job._reached = widened
    barrier.wait()
    try:
        upgrade_gallery(Gallery.open(src), open_storage(dst), plan, batch_size=40)
        results.put((os.getpid(), "ok", ""))
    except LeaseHeldError as exc:
        results.put((os.getpid(), "held", str(exc)))
    except BaseException as exc:  # any other outcome fails the test, with its text
        results.put((os.getpid(), "error", f"{type(exc).__name__}: {exc}"))


def test_forced_race_one_winner_loser_names_holder_20_times(
    tmp_path: Path, plan: UpgradePlan
) -> None:
    src = tmp_path / "src"
    write_gallery(src, synthetic_rows(230), shard_rows=100)
    outcomes = []
    for trial in range(TRIALS):
        dst = tmp_path / f"dst-{trial}"
        barrier, results = CTX.Barrier(2), CTX.Queue()
        procs = [
            CTX.Process(target=_racer, args=(str(src), str(dst), plan, barrier, results))
            for _ in range(2)
        ]
        for p in procs:
            p.start()
        got = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        kinds = sorted(kind for _, kind, _ in got)
        assert kinds == ["held", "ok"], got
        winner = next(pid for pid, kind, _ in got if kind == "ok")
        loser_text = next(text for _, kind, text in got if kind == "held")
        assert f"pid {winner} " in loser_text and str(dst) in loser_text
        outcomes.append(snapshot(dst))
    # Every winner wrote the same, complete, verified gallery; no lease or temp file is left.
    reference = tmp_path / "reference"
    upgrade_gallery(Gallery.open(src), open_storage(reference), plan, batch_size=40)
    expected = snapshot(reference)
    assert all(o == expected for o in outcomes)
    assert LEASE not in expected and MANIFEST in expected
    for info in Gallery.open(reference).manifest.shards:
        with Gallery.open(reference).shard(info, verify=True):
            pass


def test_lease_of_a_killed_holder_is_taken_over(tmp_path: Path, plan: UpgradePlan) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_gallery(src, synthetic_rows(50), shard_rows=100)
    ready = CTX.Event()

    def hold() -> None:
        with upgrade_lease(open_storage(dst)):
            ready.set()
            time.sleep(60)

    holder = CTX.Process(target=hold)
    holder.start()
    assert ready.wait(30)
    with pytest.raises(LeaseHeldError, match=f"pid {holder.pid} "):
        upgrade_gallery(Gallery.open(src), open_storage(dst), plan, batch_size=40)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert (dst / LEASE).exists()  # left behind by the killed holder
    report = upgrade_gallery(Gallery.open(src), open_storage(dst), plan, batch_size=40)
    assert report.rows == 50 and not (dst / LEASE).exists()


def test_finished_gallery_is_verified_before_nothing_to_do(
    tmp_path: Path, plan: UpgradePlan
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    write_gallery(src, synthetic_rows(230), shard_rows=100)
    upgrade_gallery(Gallery.open(src), open_storage(dst), plan, batch_size=40)
    again = upgrade_gallery(Gallery.open(src), open_storage(dst), plan, batch_size=40)
    assert again.already_complete
    shard = sorted(dst.glob("part-*.parquet"))[1]
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DestinationError, match=rf"1 of 3 shards .*{shard.name}"):
        upgrade_gallery(Gallery.open(src), open_storage(dst), plan, batch_size=40)


@pytest.mark.services
def test_s3_lease_is_exclusive_and_released(tmp_path: Path, plan: UpgradePlan, s3: S3) -> None:
    src = tmp_path / "src"
    write_gallery(src, synthetic_rows(50), shard_rows=100)
    dst = open_storage(s3.uri("out"))
    with upgrade_lease(dst) as held:
        assert dst.exists(LEASE)
        with pytest.raises(LeaseHeldError, match=f"pid {os.getpid()} .*run {held['run']}"):
            upgrade_gallery(Gallery.open(src), open_storage(s3.uri("out")), plan, batch_size=40)
    assert not dst.exists(LEASE)
    report = upgrade_gallery(Gallery.open(src), open_storage(s3.uri("out")), plan, batch_size=40)
    assert report.rows == 50 and not dst.exists(LEASE) and dst.exists(MANIFEST)
