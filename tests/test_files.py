"""Published files get the mode a plain ``open`` gives (0666 less the umask), not 0600."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from fct_registry._files import publish_mode
from fct_registry.gate.report import write_text
from fct_registry.registry.summary import RegisteredVersion, RegistrationSummary, write_summary


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request: pytest.FixtureRequest):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_publish_mode_follows_the_umask(tmp_path: Path, umask: int) -> None:
    with tempfile.NamedTemporaryFile(dir=tmp_path, delete=False) as fh:
        pass
    assert _mode(Path(fh.name)) == 0o600  # what tempfile gives
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert _mode(publish_mode(Path(fh.name))) == _mode(plain) == 0o666 & ~umask


def test_reports_and_summaries_are_published_with_the_umask(tmp_path: Path, umask: int) -> None:
    report = write_text(tmp_path / "gate.md", "ok\n")
    version = RegisteredVersion("fashion-side-info", 1, "side_info", "0" * 64, True)
    summary = tmp_path / "registry.json"
    write_summary(RegistrationSummary("fashion", "sqlite:///x", "unknown", version), summary)
    assert _mode(report) == _mode(summary) == 0o666 & ~umask


def test_tracked_registry_summary_holds_no_machine_state(tmp_path: Path) -> None:
    """outputs/registry.json is kept in git: an identical reproduction elsewhere (another store
    path, commit, or a rerun that creates nothing) must write the same bytes."""
    first = RegisteredVersion("fashion-side-info", 1, "side_info", "0" * 64, True)
    again = RegisteredVersion("fashion-side-info", 1, "side_info", "0" * 64, False)
    here, there = tmp_path / "a.json", tmp_path / "b.json"
    write_summary(RegistrationSummary("fashion", "sqlite:////here/mlflow.db", "abc", first), here)
    write_summary(RegistrationSummary("fashion", "sqlite:////there/db", "def", again), there)
    assert here.read_bytes() == there.read_bytes()
    assert "sqlite" not in here.read_text() and "created" not in here.read_text()
