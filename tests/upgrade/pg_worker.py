"""One upgrade into pgvector in its own process, for the kill, server-kill and concurrency tests.

Processes come from a forkserver that has already imported the upgrade code (a cold interpreter
spends seconds importing it; the kill test starts eleven), so a child starts in milliseconds and
is killed with SIGKILL like any process. :func:`start` returns the process and a ``ready`` event
set once the plan is built (the test's clock starts there); the child writes ``{"rc": ...,
"stderr": ..., "report": ...}`` to ``out`` as JSON: rc 2 for an FctError, 3 when the gallery is
busy.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fct_registry.errors import FctError
from fct_registry.gallery.pg.errors import GalleryBusyError
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.tables import HnswParams
from fct_registry.upgrade import pgvector
from fct_registry.upgrade.pgvector import Source, upgrade_to_pg
from fct_registry.upgrade.plan import UpgradePlan

SIDE = "tiny-side-info/1"
PRELOAD = ["fct_registry.upgrade.pgvector", "onnxruntime", "tests.upgrade.pg_worker"]
_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def start(
    url: str,
    onnx: Path,
    out: Path,
    *,
    source_version: int = 1,
    target: int = 2,
    batch_size: int = 50,
    lock_wait: float = 5.0,
    hook: str | None = None,
    source: str | None = None,
) -> tuple[Any, Any]:
    """Upgrade ``source`` (default: the gallery at ``url`` itself) into ``url``."""
    ctx = _context()
    ready = ctx.Event()
    proc = ctx.Process(
        target=_run,
        args=(url, str(onnx), source_version, target, batch_size, lock_wait, hook, str(out), ready,
              source or url),
    )  # fmt: skip
    proc.start()
    return proc, ready


def result(out: Path) -> dict[str, Any]:
    return json.loads(Path(out).read_text())


def _fault(hook: str) -> Callable[[str], None]:
    """``kill:<point>`` SIGKILLs the process when the job reaches ``<point>``;
    ``sleep:<point>:<seconds>`` pauses it there."""
    action, point = hook.split(":", 1)
    seconds = 0.0
    if action == "sleep":
        point, pause = point.rsplit(":", 1)
        seconds = float(pause)

    def reached(at: str) -> None:
        if at != point:
            return
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(seconds)

    return reached


def _run(
    url: str,
    onnx: str,
    source_version: int,
    target: int,
    batch_size: int,
    lock_wait: float,
    hook: str | None,
    out: str,
    ready: Any,
    source_location: str,
) -> None:
    if hook:
        pgvector._reached = _fault(hook)
    plan = UpgradePlan.from_onnx("tiny", target, {(source_version, SIDE): [onnx]}, threads=1)
    ready.set()
    outcome: dict[str, Any] = {"rc": 0, "stderr": "", "report": None}
    try:
        source = Source.open(source_location)
        try:
            report = upgrade_to_pg(
                source, PgLocation.parse(url), plan, batch_size=batch_size,
                lock_wait=lock_wait, hnsw=HnswParams(m=8, ef_construction=32),
            )  # fmt: skip
        finally:
            source.close()
        outcome["report"] = {
            "table": report.table,
            "resumed_rows": report.resumed_rows,
            "already_complete": report.already_complete,
        }
    except GalleryBusyError as exc:
        outcome.update(rc=3, stderr=f"error: {exc}")
    except FctError as exc:
        outcome.update(rc=2, stderr=f"error: {exc}")
    Path(out).write_text(json.dumps(outcome))
