"""Third-party chatter stays out of the commands' output: the ONNX optimizer's progress lines
("Removed 31 unused nodes", "PassManager: ...") during ``fct register``, and platformdirs'
RuntimeDirWarning when ``fct gallery server`` imports pgserver."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.registry.conftest import tiny_pipeline  # noqa: F401  (session fixture)

OPTIMIZER_LINES = ("unused nodes", "unused functions", "PassManager")

_EXPORT = textwrap.dedent(
    """
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # as `fct register` sets it
    from fct_registry.models.io import build_from_spec
    from fct_registry.registry.onnx_export import export_onnx
    spec = {"kind": "embedding", "backbone": "smallcnn", "backbone_kwargs": {"width": 4},
            "in_channels": 1, "input_shape": [1, 28, 28], "mean": [0.3], "std": [0.3],
            "embedding_dim": 8, "num_classes": 5}
    print("before", flush=True)
    export_onnx(build_from_spec(spec).eval(), sys.argv[1], "embedding", input_shape=[1, 28, 28])
    print("after")
    """
)


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _optimizer_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(s in line for s in OPTIMIZER_LINES)]


def test_onnx_export_prints_nothing_of_its_own(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys\n" + _EXPORT, str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "before\nafter\n"  # stdout works again after the export
    assert not _optimizer_lines(proc.stderr)
    assert (tmp_path / "m.onnx").stat().st_size > 0


@pytest.mark.slow
def test_fct_register_prints_no_optimizer_lines(
    tiny_pipeline,  # noqa: F811  (the imported session fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    from fct_registry.cli import main

    monkeypatch.chdir(tiny_pipeline.root)
    assert main(["register", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0
    out, err = capfd.readouterr()
    assert "fashion in sqlite" in out
    for text in (out, err):
        assert not _optimizer_lines(text)


def test_pgserver_commands_print_no_runtime_dir_warning(tmp_path: Path) -> None:
    pytest.importorskip("pgserver")
    runtime = tmp_path / "xdg"  # a runtime folder platformdirs warns about (mode 0777)
    runtime.mkdir()
    runtime.chmod(0o777)
    env = {**_env(), "XDG_RUNTIME_DIR": str(runtime), "PYTHONWARNINGS": "default"}
    bare = subprocess.run(
        [sys.executable, "-c", "import pgserver"], capture_output=True, text=True, env=env
    )
    assert "RuntimeDirWarning" in bare.stderr, "the condition this test guards against"
    data = tmp_path / "pg"
    fct = [sys.executable, "-m", "fct_registry", "gallery", "server", str(data)]
    try:
        start = subprocess.run(fct, capture_output=True, text=True, env=env, timeout=120)
        assert "RuntimeDirWarning" not in start.stderr
        # A start that fails (pg_ctl's 10 s timeout on a busy machine) is one line too.
        assert start.stderr == "" if start.returncode == 0 else len(start.stderr.splitlines()) == 1
        assert start.returncode in (0, 2), start.stderr
    finally:
        stop = subprocess.run(
            [*fct, "--stop"], capture_output=True, text=True, env=env, timeout=120
        )
    assert "RuntimeDirWarning" not in stop.stderr
