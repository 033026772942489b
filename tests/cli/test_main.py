"""The ``fct`` dispatcher: version, closed pipes, read-only commands, fast usage errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fct_registry import __version__
from fct_registry.cli import COMMANDS, EXIT_BROKEN_PIPE, build_parser, main
from fct_registry.cli import gallery as parser_side
from fct_registry.cli.upgrade import DEFAULT_BATCH_SIZE, ENGINE_NAMES
from fct_registry.gallery.pg.tables import DISTANCE_OPS, HNSW_EF_CONSTRUCTION, HNSW_M
from fct_registry.registry.store import NoTrackingStoreError
from fct_registry.upgrade.engines import ENGINES
from fct_registry.upgrade.job import DEFAULT_BATCH_SIZE as JOB_BATCH_SIZE
from tests.conftest import ROOT

HEAVY = ("torch", "mlflow", "pyarrow")


def _fct(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``fct ARGV`` in a fresh interpreter (what a user's shell runs), this checkout first."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    code = "import sys; from fct_registry.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"fct {__version__}\n"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, help_line in COMMANDS.items():
        assert name in out and help_line.split()[0] in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_line_is_the_parsers(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The dispatcher's copy of each one-line help matches the subcommand's own parser."""
    with pytest.raises(SystemExit):
        main(["--help"])
    short = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([name, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: fct {name}")
    assert " ".join(COMMANDS[name].split()[:3]) in " ".join(short.split())


def test_lazy_help_is_the_full_parsers() -> None:
    """``fct --help`` is built without importing any subcommand's parser, yet lists the same
    help lines as the full parser that docs/cli.md is generated from."""
    assert build_parser("").format_help() == build_parser().format_help()


def test_upgrade_help_names_every_kind_of_gallery(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["upgrade", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "s3://bucket/prefix" in text and "postgresql://USER:PASSWORD@HOST:PORT/DB?gallery=" in text
    )
    assert (
        "--gallery SRC the gallery to upgrade: a folder, s3://bucket/prefix or postgresql://"
        in text
    )


def test_upgrade_parser_copies_match_the_library() -> None:
    assert tuple(ENGINES.names()) == ENGINE_NAMES or set(ENGINE_NAMES) == set(ENGINES.names())
    assert DEFAULT_BATCH_SIZE == JOB_BATCH_SIZE


def test_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    # A reader that stops after one byte, like `fct ... --json | head -c1`.
    code = (
        "import sys\nfrom fct_registry.cli import main\n"
        "sys.exit(main(['evaluate', '--query', 'q.npy', '--query-labels', 'l.npy', "
        "'--leave-one-out', '--json']))"
    )
    rng = np.random.default_rng(0)
    np.save(tmp_path / "q.npy", rng.normal(size=(40, 4)).astype(np.float32))
    np.save(tmp_path / "l.npy", rng.integers(0, 3, 40))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        f'{sys.executable} -c "{code}" | head -c1',
        shell=True,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=120)
    assert out == "{"
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_broken_pipe_in_a_command_is_caught(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The handler itself: a command whose output pipe is gone returns 141, no traceback."""
    import fct_registry.commands.evaluate as command

    def closed(_args: object) -> int:
        raise BrokenPipeError

    monkeypatch.setattr(command, "run", closed)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "q").touch()
    (tmp_path / "l").touch()
    dup = os.dup(sys.stdout.fileno())
    try:
        status = main(["evaluate", "--query", "q", "--query-labels", "l", "--leave-one-out"])
    finally:
        os.dup2(dup, sys.stdout.fileno())
        os.close(dup)
    assert status == EXIT_BROKEN_PIPE


@pytest.mark.parametrize(
    "argv",
    [
        ["resolve", "fashion@1", "fashion@2"],
        ["graph", "fashion"],
        ["upgrade", "--gallery", "g", "--to", "fashion@2", "--out", "o"],
        ["embed", "--model", "fashion@1", "--images", "i.safetensors", "--out", "o"],
    ],
)
def test_read_only_commands_never_create_a_store(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("g", "i.safetensors"):
        (tmp_path / name).touch()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no tracking store" in err and "--tracking-uri" in err and "MLFLOW_TRACKING_URI" in err
    assert {p.name for p in tmp_path.iterdir()} == {"g", "i.safetensors"}  # no mlflow.db


def test_no_tracking_store_error_is_an_fct_error() -> None:
    from fct_registry.errors import FctError

    assert issubclass(NoTrackingStoreError, FctError)


def test_search_refuses_queries_of_unknown_version(tmp_path: Path, capsys) -> None:
    (tmp_path / "gallery").mkdir()
    np.save(tmp_path / "q.npy", np.zeros((2, 4), dtype=np.float32))
    argv = ["search", "--gallery", str(tmp_path / "gallery"), "--query", str(tmp_path / "q.npy")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--query-version" in err and "--query-gallery" in err


def test_import_probe_sees_torch(tmp_path: Path) -> None:
    """The probe below can fail: a command that does import torch is seen doing so."""
    probe = _fct("--version", cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert not re.search(r"\|\s+torch$", probe.stderr, re.M)
    code = "import fct_registry.models.io"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPROFILEIMPORTTIME": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert re.search(r"\|\s+torch$", out.stderr, re.M)


@pytest.mark.parametrize(
    "argv",
    [
        ["resolve", "not-a-ref", "fashion@2"],
        ["search", "--gallery", "missing", "--query", "q.npy", "--query-version", "1"],
        ["upgrade", "--gallery", "missing", "--to", "fashion@2", "--out", "o"],
        ["resolve", "fashion@1", "fashion@2"],  # no store here
        ["evaluate", "--query", "q.npy", "--query-labels", "l.npy", "--leave-one-out"],
    ],
)
def test_simple_failures_are_fast(argv: list[str], tmp_path: Path) -> None:
    """Usage errors come before torch, MLflow or pyarrow are imported."""
    start = time.perf_counter()
    proc = _fct(*argv, cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
    # Under load the wall clock says little; the imports are what makes a failure slow.
    probe = _fct(*argv, cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    heavy = [
        m for m in ("torch", "mlflow", "pyarrow") if re.search(rf"\|\s+{m}$", probe.stderr, re.M)
    ]
    assert heavy == [], f"{argv} imported {heavy} before failing ({seconds:.1f} s)"


def test_gallery_parser_copies_match_the_store() -> None:
    assert set(parser_side.DISTANCES) == set(DISTANCE_OPS)
    assert (parser_side.HNSW_M, parser_side.HNSW_EF_CONSTRUCTION) == (
        HNSW_M,
        HNSW_EF_CONSTRUCTION,
    )
