"""The wheel, installed with no extra (the core) in a fresh virtualenv, serves a gallery machine:
``fct resolve``, ``fct upgrade`` and ``fct search`` (and ``fct evaluate``) work against a real
MLflow tracking server, and torch is not there to import. Slow: it builds the wheel and the venv
(pip reads PyPI or the local wheel cache; ~2-3 minutes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from fct_registry.evaluation.retrieval import retrieval_scores
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.search import search
from tests.support import services
from tests.upgrade.conftest import (  # noqa: F401  (tiny_registry: session fixture)
    TinyRegistry,
    synthetic_rows,
    tiny_registry,
    write_gallery,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "fct_registry"
HEAVY = ("torch", "torchvision", "dvc", "matplotlib")


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the freshly built wheel and its core dependencies only."""
    tmp = tmp_path_factory.mktemp("slim")
    src = tmp / "src"  # a copy: building in the checkout would leave build/ and *.egg-info there
    shutil.copytree(ROOT / PACKAGE, src / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    build = subprocess.run(
        [*pip_wheel, "-w", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("fct_registry-*.whl")
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [venv / "bin/pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=1200,
        env=_env(),
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def _env(**extra: str) -> dict[str, str]:
    """This environment without anything that makes the repository's code importable."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"OMP_NUM_THREADS": "1"} | extra


@pytest.fixture(scope="module")
def server(tiny_registry: TinyRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    """The tiny registry behind an MLflow tracking server (the core's mlflow-skinny is a client:
    it has no SQL store of its own)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc, url = services.start_ui(tiny_registry.uri, log, env=_env())
    try:
        yield url
    finally:
        services.stop(proc)


def _fct(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [venv / "bin/fct", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=_env()
    )


def _vectors(location: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    batches = list(Gallery.open(location).batches())
    batch = pa.Table.from_batches(batches).combine_chunks().to_batches()[0]
    ids = batch.column(gallery_schema.ID).to_pylist()
    return (
        ids,
        gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t"),
        batch.column(gallery_schema.LABEL).to_numpy(),
    )


def test_core_wheel_resolves_upgrades_and_searches_without_torch(
    core_venv: Path,
    server: str,
    tiny_registry: TinyRegistry,  # noqa: F811
    tmp_path: Path,
) -> None:
    python = core_venv / "bin/python"
    no_torch = subprocess.run(
        [python, "-c", "import torch"], cwd=tmp_path, capture_output=True, text=True, env=_env()
    )
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    # the code that runs is the wheel's, not this checkout's
    where = subprocess.run(
        [python, "-c", "import fct_registry; print(fct_registry.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert where.stdout.startswith(str(core_venv)), where.stdout + where.stderr

    resolved = _fct(
        core_venv, tmp_path, "resolve", "tiny@1", "tiny@2", "--tracking-uri", server, "--json"
    )
    assert resolved.returncode == 0, resolved.stderr[-3000:]
    chosen = json.loads(resolved.stdout)["chosen"]
    assert chosen["path"] == [1, 2]
    assert chosen["hops"][0]["uri"] == "models:/tiny-transformations/1"

    rows = synthetic_rows(150)
    write_gallery(tmp_path / "v1", rows)
    upgraded = _fct(
        core_venv,
        tmp_path,
        "upgrade",
        "--gallery",
        str(tmp_path / "v1"),
        "--to",
        "tiny@2",
        "--out",
        str(tmp_path / "up"),
        "--tracking-uri",
        server,
        "--no-progress",
    )
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    ids, new, labels = _vectors(tmp_path / "up")
    assert ids == rows.ids
    with torch.no_grad():
        want = tiny_registry.transformation(torch.from_numpy(rows.old), torch.from_numpy(rows.side))
    np.testing.assert_allclose(new, want.numpy(), atol=1e-5)

    searched = _fct(
        core_venv,
        tmp_path,
        "search",
        "--gallery",
        str(tmp_path / "up"),
        "--query-gallery",
        str(tmp_path / "up"),
        "--exclude-self",
        "-k",
        "5",
        "--json",
    )
    assert searched.returncode == 0, searched.stderr[-3000:]
    out = json.loads(searched.stdout)
    here = search(Gallery.open(tmp_path / "up"), new, k=5, exclude_ids=ids)
    assert [r["ids"] for r in out["results"]] == here.ids.tolist()
    loo = retrieval_scores(
        torch.from_numpy(new),
        torch.from_numpy(new),
        torch.from_numpy(labels),
        torch.from_numpy(labels),
        leave_one_out=True,
    )
    assert out["accuracy"]["top1"] == pytest.approx(loo.top1, abs=1e-9)

    np.save(tmp_path / "q.npy", new)
    np.save(tmp_path / "l.npy", labels)
    evaluated = _fct(
        core_venv,
        tmp_path,
        "evaluate",
        "--query",
        str(tmp_path / "q.npy"),
        "--query-labels",
        str(tmp_path / "l.npy"),
        "--leave-one-out",
        "--json",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout) == pytest.approx(loo.as_dict(), abs=1e-4)
