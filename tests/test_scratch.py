"""Scratch folders: removed on exit, and a killed owner's folder removed by the next run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fct_registry.scratch import OWNER, new_folder, reap, scratch

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "fct-test-scratch-"


@pytest.fixture(autouse=True)
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def killed_owner_folder(temp_root: Path) -> Path:
    """A scratch folder whose process was SIGKILLed while holding it."""
    code = (
        "import os, signal\n"
        "from fct_registry.scratch import new_folder\n"
        f"print(new_folder({PREFIX!r}), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TMPDIR": str(temp_root), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    folder = Path(run.stdout.strip())
    assert folder.parent == temp_root and (folder / OWNER).is_file()
    return folder


def test_scratch_is_removed_on_exit_and_on_error(temp_root: Path) -> None:
    with scratch(PREFIX) as work:
        (work / "model.onnx").write_bytes(b"x")
        assert work.parent == temp_root and work.name.startswith(PREFIX)
    assert not work.exists()
    with pytest.raises(RuntimeError), scratch(PREFIX) as work:
        raise RuntimeError("boom")
    assert not work.exists()


def test_a_killed_owners_folder_is_removed_by_the_next_scratch(temp_root: Path) -> None:
    left = killed_owner_folder(temp_root)
    (left / "model.onnx").write_bytes(b"x" * 1000)
    with scratch(PREFIX) as work:
        assert not left.exists()
        assert [p.name for p in temp_root.iterdir()] == [work.name]
    assert list(temp_root.iterdir()) == []


def test_only_folders_of_gone_owners_on_this_host_are_removed(temp_root: Path) -> None:
    live = new_folder(PREFIX)  # this process
    dead = killed_owner_folder(temp_root)
    record = json.loads((live / OWNER).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()

    def folder(name: str, owner: object | None) -> Path:
        path = temp_root / f"{PREFIX}{name}"
        path.mkdir()
        if owner is not None:
            (path / OWNER).write_text(owner if isinstance(owner, str) else json.dumps(owner))
        return path

    dead_record = json.loads((dead / OWNER).read_text())
    elsewhere = folder("elsewhere", {**dead_record, "host": "another-host"})
    no_record = folder("no-record", None)
    garbage = folder("garbage", "not json {")
    not_a_dict = folder("list", [1, 2])
    # This process's PID with another start time: the PID was reused, the owner is gone.
    reused = folder("reused", {**record, "start": (record["start"] or 0) + 1})
    other_prefix = temp_root / "something-else"
    other_prefix.mkdir()
    (other_prefix / OWNER).write_text(json.dumps(dead_record))
    # A symlink named like a scratch folder is never followed or removed.
    target = temp_root / "target"
    target.mkdir()
    (target / OWNER).write_text(json.dumps(dead_record))
    link = temp_root / f"{PREFIX}link"
    link.symlink_to(target)

    removed = reap(PREFIX)
    expected = {dead} | ({reused} if record["start"] is not None else set())
    assert set(removed) == expected
    for path in (live, elsewhere, no_record, garbage, not_a_dict, other_prefix, link, target):
        assert path.exists(), path
    assert (target / OWNER).is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_another_users_folder_stays(temp_root: Path) -> None:
    dead = killed_owner_folder(temp_root)
    os.chown(dead, 12345, 12345)
    assert reap(PREFIX) == [] and dead.exists()
