"""Two ``fct embed`` runs into one ``--out``: exactly one proceeds, the other exits 2 with one line
naming the holder; the winner's gallery is byte-identical to a solo run's. Plus: a killed
holder's lease is taken over, temporary-file cleanup spares live writers, a refused input leaves
no job file, and ``fct backfill run`` holds the same kind of lease.

The CLI runs for real (parser, checks, ``FctError`` -> ``error: ...``, exit 2) with the registry
look-up replaced by two tiny in-process models, so no MLflow store is built. The race is forced
by widening the window after the lease is taken (the job's ``_reached("inspected")`` hook,
replaced as ``tests/support/kill_at.py`` does), and run 20 times; both runs are forked after a
barrier.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from fct_registry.cli import main
from fct_registry.commands import embed as embed_command
from fct_registry.gallery import embed_job, open_storage
from fct_registry.gallery.embed_job import JOB_FILE, LEASE, EmbedModels, embed_source
from fct_registry.gallery.indexed_with import IndexedWith
from fct_registry.gallery.manifest import MANIFEST
from fct_registry.jobs.lease import LeaseHeldError, lease
from fct_registry.storage import TMP_SUFFIX, LocalStorage
from tests.backfill.conftest import setup  # noqa: F401  (pytest fixture)
from tests.data.images import encode, write_flat
from tests.upgrade.conftest import snapshot

TRIALS = 20
WINDOW_S = 0.3
CTX = mp.get_context("fork")


def _models() -> EmbedModels:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 8))
    side = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 4))
    return EmbedModels("tiny", 1, model, side, "tiny-side@1", key="tiny models")


def _index_tiny(client, ref, source, storage, **kw):
    """``index_with_registry`` without a registry: the same job, two tiny models."""
    from fct_registry.data.decode import ImageTransform

    transform = ImageTransform.for_input_shape(
        [1, 28, 28],
        resize=kw["resize"],
        upscale=kw["upscale"],
        color=kw["color"],
        max_pixels=kw["max_pixels"],
    )
    report = embed_source(
        source,
        storage,
        _models(),
        transform,
        device="cpu",
        batch_size=kw["batch_size"],
        num_workers=0,  # decode here: fast, and monkeypatches apply
        shard_rows=kw["shard_rows"],
        on_bad_image=kw["on_bad_image"],
        limit=kw["limit"],
    )
    used = IndexedWith("tiny", 1, "models:/tiny/1", "tiny-side@1", "models:/tiny-side/1")
    return report, used, transform


def _no_registry(target) -> None:
    """Patch ``fct embed``'s registry access on ``target`` (a MonkeyPatch, or None to patch in a
    forked child that exits afterwards)."""
    from fct_registry.cli import embed as embed_cli

    patches = [
        (embed_cli, "check_store", lambda uri: None),
        (embed_command, "open_tracking_store", lambda *a, **k: None),
        (embed_command, "index_with_registry", _index_tiny),
    ]
    for module, name, value in patches:
        if target is None:
            setattr(module, name, value)
        else:
            target.setattr(module, name, value)


def _argv(images: Path, out: Path, *extra: str) -> list[str]:
    return [
        "embed", "--model", "tiny@1", "--images", str(images), "--out", str(out),
        "--shard-rows", "5", "--batch-size", "4", "--device", "cpu", "--no-progress", *extra,
    ]  # fmt: skip


def _warm_imports() -> None:
    """Import what a run imports lazily, once in the parent, so each forked run need not (the
    parent runs no torch op before forking: threads do not survive a fork)."""
    import pandas  # noqa: F401  (pyarrow imports it on first conversion)
    import pyarrow.parquet  # noqa: F401
    import torchvision.io
    import torchvision.transforms.v2.functional  # noqa: F401
    from PIL import Image

    Image.init()


def _racer(argv: list[str], barrier, results) -> None:
    import torch

    torch.set_num_threads(1)
    _no_registry(None)

    def widened(point: str) -> None:
        if point == "inspected":
            time.sleep(WINDOW_S)

    embed_job._reached = widened
    err, out = io.StringIO(), io.StringIO()
    barrier.wait()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    except BaseException as exc:  # a traceback is a failure: report it
        rc, err = -1, io.StringIO(f"{type(exc).__name__}: {exc}")
    results.put((os.getpid(), rc, err.getvalue()))


def _race(argv_a: list[str], argv_b: list[str]) -> list[tuple[int, int, str]]:
    barrier, results = CTX.Barrier(2), CTX.Queue()
    procs = [CTX.Process(target=_racer, args=(a, barrier, results)) for a in (argv_a, argv_b)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return got


def _check_loser(got: list[tuple[int, int, str]], out: Path) -> int:
    """The loser exited 2 with one line naming the winner's pid; returns the winner's pid."""
    assert sorted(rc for _, rc, _ in got) == [0, 2], got
    winner = next(pid for pid, rc, _ in got if rc == 0)
    text = next(err for _, rc, err in got if rc == 2)
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("error: another `fct embed` is writing "), text
    assert f"pid {winner} " in lines[0] and str(out) in lines[0], text
    return winner


def test_forced_race_one_winner_loser_exits_2_naming_holder_20_times(tmp_path: Path) -> None:
    images = tmp_path / "flat"
    write_flat(images, 12)
    _warm_imports()
    outcomes = []
    for trial in range(TRIALS):
        out = tmp_path / f"out-{trial}"
        _check_loser(_race(_argv(images, out), _argv(images, out)), out)
        outcomes.append(snapshot(out))
    # A solo run (after the forks: the parent runs torch only now) is what every winner wrote.
    with pytest.MonkeyPatch.context() as mp_:
        _no_registry(mp_)
        assert main(_argv(images, tmp_path / "solo")) == 0
    solo = snapshot(tmp_path / "solo")
    assert MANIFEST in solo and LEASE not in solo and not any(n.endswith(TMP_SUFFIX) for n in solo)
    assert all(o == solo for o in outcomes)


def test_race_with_other_settings_names_the_holder_not_an_interrupted_job(tmp_path: Path) -> None:
    images = tmp_path / "flat"
    write_flat(images, 12)
    out = tmp_path / "out"
    got = _race(_argv(images, out), _argv(images, out, "--limit", "7"))
    _check_loser(got, out)
    assert "interrupted" not in " ".join(err for _, _, err in got)
    assert MANIFEST in snapshot(out) and LEASE not in snapshot(out)


def test_lease_of_a_killed_embed_is_taken_over(tmp_path: Path, monkeypatch) -> None:
    images, out = tmp_path / "flat", tmp_path / "out"
    write_flat(images, 6)
    ready = CTX.Event()

    def hold() -> None:
        with lease(open_storage(out), LEASE, "`fct embed`"):
            ready.set()
            time.sleep(60)

    holder = CTX.Process(target=hold)
    holder.start()
    assert ready.wait(30)
    _no_registry(monkeypatch)
    with pytest.raises(LeaseHeldError, match=f"pid {holder.pid} "):
        _index_tiny(None, None, _source(images), open_storage(out), **_KW)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert (out / LEASE).exists()  # left behind by the killed holder
    assert main(_argv(images, out)) == 0
    assert not (out / LEASE).exists() and (out / MANIFEST).exists()


_KW = {
    "resize": -1, "upscale": False, "color": "convert", "max_pixels": None, "batch_size": 4,
    "shard_rows": 5, "on_bad_image": "fail", "limit": None,
}  # fmt: skip


def _source(images: Path):
    from fct_registry.data.image_sources import open_source

    return open_source(str(images))


def test_temporary_cleanup_spares_live_writers(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    dead = CTX.Process(target=lambda: None)
    dead.start()
    dead.join()
    live = CTX.Process(target=time.sleep, args=(60,))
    live.start()
    try:
        names = {
            who: f".part-0000{k}.parquet.{pid}-0123abcd{TMP_SUFFIX}"
            for k, (who, pid) in enumerate(
                [("mine", os.getpid()), ("dead", dead.pid), ("live", live.pid)]
            )
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"half")
        (tmp_path / f".old{TMP_SUFFIX}").write_bytes(b"no pid in the name")
        gone = storage.remove_temporaries()
        assert sorted(gone) == sorted([names["mine"], names["dead"], f".old{TMP_SUFFIX}"])
        assert storage.list() == [names["live"]]  # another run, still writing
    finally:
        live.kill()
        live.join()


def test_refused_input_leaves_no_job_file(tmp_path: Path, monkeypatch, capsys) -> None:
    images = tmp_path / "flat"
    pixels = write_flat(images, 8)
    (images / "00000.png").write_bytes(encode(pixels[0])[:60])  # truncated: the first item
    _no_registry(monkeypatch)
    out = tmp_path / "out"
    assert main(_argv(images, out)) == 2
    assert "00000.png is a corrupt or truncated PNG" in capsys.readouterr().err
    assert not out.exists() or snapshot(out) == {}  # no job.json, no lease, no temp file
    # The folder is free for another command (before: "holds an interrupted `fct embed`").
    assert main(_argv(images, out, "--on-bad-image", "skip")) == 0
    assert (out / MANIFEST).exists() and not (out / JOB_FILE).exists()


def test_failure_after_a_finished_shard_keeps_the_job_for_the_rerun(
    tmp_path: Path, monkeypatch
) -> None:
    images = tmp_path / "flat"
    pixels = write_flat(images, 8)
    (images / "00006.png").write_bytes(encode(pixels[6])[:60])  # in the second shard
    _no_registry(monkeypatch)
    out = tmp_path / "out"
    assert main(_argv(images, out)) == 2
    assert (out / JOB_FILE).exists() and (out / "part-00000.parquet").exists()
    assert not (out / LEASE).exists()


def test_backfill_run_holds_a_lease(setup, tmp_path: Path) -> None:  # noqa: F811
    from fct_registry.backfill import run as backfill_run
    from fct_registry.backfill.plan import Budget, make_plan
    from fct_registry.gallery import Gallery

    plan = make_plan(Gallery.open(setup.gallery), Budget.parse("20%"), images=str(setup.images))
    ready = CTX.Event()

    def hold() -> None:
        with lease(open_storage(setup.gallery), backfill_run.LEASE, "`fct backfill run`"):
            ready.set()
            time.sleep(60)

    holder = CTX.Process(target=hold)
    holder.start()
    assert ready.wait(30)
    before = snapshot(setup.gallery)
    with pytest.raises(LeaseHeldError, match=f"another `fct backfill run` .*pid {holder.pid} "):
        backfill_run.run_backfill(plan, setup.embed, model_id="m")
    assert snapshot(setup.gallery) == before  # refused before anything was touched
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    report = backfill_run.run_backfill(plan, setup.embed, model_id="m")  # takes the lease over
    assert report.shards and not (setup.gallery / backfill_run.LEASE).exists()
