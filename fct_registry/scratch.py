"""Scratch folders that a killed process does not leave behind for good.

A ``tempfile.TemporaryDirectory`` is removed on return and on exceptions, but not when its
process is SIGKILLed (the OOM killer, a CI timeout, ``kill -9``): the models an upgrade fetched
then stay in the system's temp folder until the OS cleans it. Each scratch folder here records
its owner (host, PID and the process's start time, so a reused PID does not pass for the
owner); the next ``scratch()`` of the same prefix removes the folders whose owner is gone.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fct_registry.liveness import holder_gone

OWNER = ".fct-owner"


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh temporary folder named ``PREFIX*``, removed on exit; folders of this prefix
    left by processes that died without cleaning up are removed first."""
    work = _create(prefix)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def new_folder(prefix: str) -> Path:
    """``scratch()`` for the rest of this process: removed when it exits (or earlier, by the
    caller)."""
    work = _create(prefix)
    atexit.register(shutil.rmtree, work, True)
    return work


def _create(prefix: str) -> Path:
    reap(prefix)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / OWNER).write_text(json.dumps(_owner_record(os.getpid())), encoding="utf-8")
    return work


def reap(prefix: str, folder: str | Path | None = None) -> list[Path]:
    """Remove the ``PREFIX*`` folders in ``folder`` (default: the temp folder) that this user
    owns and whose recorded owner process, on this host, no longer runs. Folders without an
    owner record, or with one that does not parse, are someone else's and stay. Returns what
    was removed."""
    root = Path(folder if folder is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for path in candidates:
        try:
            info = os.lstat(path)  # a symlink is never followed, let alone removed through
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            record = json.loads((path / OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and _owner_gone(record):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _owner_record(pid: int) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)}


def _owner_gone(record: dict[str, Any]) -> bool:
    """The recorded process ran on this host and is gone, or its PID now names a process that
    started at another time (a reused PID)."""
    if holder_gone(record):
        return True
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    start = record.get("start")
    now = _start_time(record["pid"])
    return start is not None and now is not None and now != start


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot; None where there is no /proc."""
    try:
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 of proc_pid_stat(5), the 20th after the name
    except (OSError, IndexError, ValueError):
        return None
