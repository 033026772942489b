"""Registered models serve from PyPI alone: a fresh virtualenv built from a model's own
``requirements.txt`` (no fct_registry, no torch) predicts, serves and loads ``models:/`` URIs,
and its outputs equal the fct flavor's (PyTorch, this package).

The virtualenv is built once and cached under ``$FCT_SERVING_VENV_CACHE`` (default
``~/.cache/fct-registry/serving-venvs``), keyed by the requirements and the Python version: the
first build takes minutes (pip reads this machine's wheel cache), later sessions reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from fct_registry.registry import flavor
from tests.registry.conftest import FAMILY
from tests.support.services import free_port, stop, wait_until

pytestmark = pytest.mark.slow
TRANSFORMATIONS = f"{FAMILY}-transformations"
CACHE = Path(
    os.environ.get("FCT_SERVING_VENV_CACHE", Path.home() / ".cache/fct-registry/serving-venvs")
)


@pytest.fixture(scope="session")
def serving_venv() -> Path:
    """A virtualenv with exactly what a logged model's requirements.txt asks for, plus the SQL
    store client: the model pins mlflow-skinny, which reads a ``sqlite://`` store (as these tests
    do) only with sqlalchemy and alembic beside it (a tracking server needs neither)."""
    from importlib.metadata import version

    from fct_registry.registry.flavor import default_pip_requirements

    store_client = [f"{name}=={version(name)}" for name in ("sqlalchemy", "alembic")]
    requirements = "\n".join([*default_pip_requirements(), *store_client]) + "\n"
    key = hashlib.sha256(f"{sys.version_info[:3]}\n{requirements}".encode()).hexdigest()[:16]
    venv = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions build it once
        if not (venv / ".complete").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
            (venv / "requirements.txt").write_text(requirements)
            out = subprocess.run(
                [venv / "bin/pip", "install", "-q", "-r", venv / "requirements.txt"],
                capture_output=True,
                text=True,
                timeout=1800,
                env=_clean_env(),
            )
            if out.returncode != 0:
                pytest.fail(
                    f"pip could not install the model's requirements:\n{out.stderr[-3000:]}"
                )
            (venv / ".complete").write_text(requirements)
    return venv


def _clean_env(venv: Path | None = None, **extra: str) -> dict[str, str]:
    """This environment without anything that could make fct_registry importable; with
    ``venv``, as if it were activated (``mlflow models serve`` runs ``uvicorn`` from PATH)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    paths = [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(Path.cwd()))]
    if venv is not None:
        paths.insert(0, str(venv / "bin"))
        env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join(paths)
    env.update(OMP_NUM_THREADS="1", MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true", **extra)
    if "MLFLOW_TRACKING_URI" in extra:  # the registry too, whatever an earlier test left behind
        env["MLFLOW_REGISTRY_URI"] = extra["MLFLOW_TRACKING_URI"]
    return env


@pytest.fixture(scope="module")
def store(registered, tmp_path_factory) -> dict:
    """A copy of the registered store with the measured chain 1->2->3 recorded as a version."""
    import mlflow
    from mlflow import MlflowClient

    from fct_registry.registry.register import record_measured_chains

    folder = tmp_path_factory.mktemp("serving-store")
    shutil.copyfile(registered.uri.removeprefix("sqlite:///"), folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    chains = record_measured_chains(registered.summary, registered.pipeline.layout, uri)
    assert chains, "the tiny pipeline measures the chain 1->2->3"
    mlflow.set_tracking_uri(None)
    client = MlflowClient(uri, registry_uri=uri)
    chain = client.get_model_version(TRANSFORMATIONS, str(chains[0]))
    return {
        "uri": uri,
        "embedding": f"models:/{FAMILY}/2",
        "transformation": registered.summary.transformations["v1_to_v2"].uri,
        "chain": f"models:/{TRANSFORMATIONS}/{chain.version}",
    }


def _inputs(kind: str, layout) -> dict[str, np.ndarray]:
    """Real inputs from the pipeline's outputs: test images, stored embeddings and side-info."""
    from fct_registry.data.prepared import load_prepared
    from fct_registry.layout import load_embeddings

    if kind == "embedding":  # stored as uint8; the model takes floats in [0, 1]
        images = load_prepared(layout.data, "test").images[:6]
        return {"images": (images.float() / 255).numpy()}
    old = load_embeddings(layout.version_embeddings(1))["test"][:6]
    side = load_embeddings(layout.side_info_embeddings)["test"][:6]
    return {"old_embedding": old.numpy(), "side_info": side.numpy()}


def _flavor_output(uri: str, store_uri: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The same model through the fct flavor (PyTorch weights, this package)."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from fct_registry.registry import flavor

    with _use_tracking_uri(store_uri):
        module = flavor.load_model(uri)
    with torch.no_grad():
        return module(*(torch.from_numpy(v) for v in inputs.values())).numpy()


def _request(inputs: dict[str, np.ndarray]) -> str:
    return json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}})


def test_the_venv_has_neither_fct_registry_nor_torch(serving_venv, tmp_path):
    for module in ("fct_registry", "torch"):
        out = subprocess.run(
            [serving_venv / "bin/python", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_clean_env(),
        )
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, module


@pytest.mark.parametrize("which", ["embedding", "transformation", "chain"])
def test_mlflow_models_predict_in_the_venv_equals_the_fct_flavor(
    serving_venv, store, registered, which, tmp_path
):
    uri = store[which]
    inputs = _inputs(
        "embedding" if which == "embedding" else "transformation", registered.pipeline.layout
    )
    (tmp_path / "in.json").write_text(_request(inputs))
    out = subprocess.run(
        [
            serving_venv / "bin/mlflow",
            "models",
            "predict",
            "-m",
            uri,
            "-i",
            "in.json",
            "-t",
            "json",
            "-o",
            "out.json",
            "--env-manager",
            "local",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(MLFLOW_TRACKING_URI=store["uri"]),
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = np.asarray(json.loads((tmp_path / "out.json").read_text())["predictions"])
    want = _flavor_output(uri, store["uri"], inputs)
    assert got.shape == want.shape and got.shape[0] == 6
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_pyfunc_loads_the_chain_by_registry_uri_without_fct_registry(
    serving_venv, store, registered, tmp_path
):
    inputs = _inputs("transformation", registered.pipeline.layout)
    np.savez(tmp_path / "in.npz", **inputs)
    script = (
        "import json, sys, numpy as np, mlflow\n"
        f"model = mlflow.pyfunc.load_model({store['chain']!r})\n"
        "inputs = dict(np.load('in.npz'))\n"
        "np.save('out.npy', model.predict(inputs))\n"
        "print(json.dumps({'fct_registry': 'fct_registry' in sys.modules, "
        "'torch': 'torch' in sys.modules, 'loader': model.loader_module}))\n"
    )
    out = subprocess.run(
        [serving_venv / "bin/python", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(MLFLOW_TRACKING_URI=store["uri"]),
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts == {
        "fct_registry": False,
        "torch": False,
        "loader": flavor.runtime_file()[0],
    }
    want = _flavor_output(store["chain"], store["uri"], inputs)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=1e-4, rtol=1e-4)


@pytest.mark.services
def test_mlflow_models_serve_answers_invocations_on_loopback(
    serving_venv, store, registered, tmp_path
):
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                serving_venv / "bin/mlflow",
                "models",
                "serve",
                "-m",
                store["embedding"],
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=_clean_env(serving_venv, MLFLOW_TRACKING_URI=store["uri"]),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _status(f"{url}/ping") == 200, 180, "mlflow models serve", proc, log)
        inputs = _inputs("embedding", registered.pipeline.layout)
        status, body = _post(f"{url}/invocations", _request(inputs))
        assert status == 200, body
        got = np.asarray(json.loads(body)["predictions"])
        want = _flavor_output(store["embedding"], store["uri"], inputs)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
        # 0-255 pixels sent to a model that takes [0, 1]: refused with the fix, not embedded.
        status, body = _post(f"{url}/invocations", _request({"images": inputs["images"] * 255}))
        assert status == 400 and "divide by 255" in body, body
    finally:
        stop(proc)


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


def _post(url: str, body: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
