"""The core install has no torch, torchvision, dvc or matplotlib: the commands it serves must not
import them. Checked in a fresh interpreter with an import hook that refuses those packages (fast;
tests/packaging/test_slim_install.py checks the real wheel in a real core-only venv)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "dvc", "matplotlib")
# What a gallery machine runs: the registry client, resolve, upgrade (local and S3 Parquet, the
# local engine), search and evaluate.
CORE_MODULES = (
    "fct_registry.cli",
    "fct_registry.cli.resolve",
    "fct_registry.cli.upgrade",
    "fct_registry.cli.search",
    "fct_registry.cli.evaluate",
    "fct_registry.commands.resolve",
    "fct_registry.commands.upgrade",
    "fct_registry.commands.search",
    "fct_registry.commands.evaluate",
    "fct_registry.registry.store",
    "fct_registry.registry.flavor_files",
    "fct_registry.upgrade.engines.local",
    "fct_registry.upgrade.engines.ray_data",  # the ray extra adds ray, not torch
    "fct_registry.upgrade.runner",
    "fct_registry.gallery.search",
    "fct_registry.evaluation.retrieval_np",
)

# Prepended to each probe: an import hook that refuses the HEAVY packages.
REFUSE_HEAVY = textwrap.dedent(
    """
    import sys
    HEAVY = {heavy!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"core import of {{name}}")
            return None

    sys.meta_path.insert(0, Refuse())
    """
)

PROBE = REFUSE_HEAVY + textwrap.dedent(
    """
    import importlib
    importlib.import_module({module!r})
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    assert not loaded, loaded
    """
)


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_without_torch(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, module=module)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


READ_CONF = REFUSE_HEAVY + textwrap.dedent(
    """
    from fct_registry.registry.flavor_files import FlavorError, flavor_conf
    print(flavor_conf(sys.argv[1])["kind"])
    try:
        flavor_conf(sys.argv[2])
    except FlavorError as exc:
        print(exc)
    """
)


def test_upgrade_reads_a_flavor_conf_without_pandas(tmp_path: Path) -> None:
    """``fct upgrade`` reads each step's MLmodel; MLflow's ``Model.load`` would import pandas,
    which mlflow-skinny (the core) does not install."""
    (tmp_path / "fct").mkdir()
    (tmp_path / "fct/MLmodel").write_text(
        "flavors:\n  fct:\n    kind: transformation\n    onnx: model.onnx\n"
    )
    (tmp_path / "other").mkdir()
    (tmp_path / "other/MLmodel").write_text("flavors:\n  onnx:\n    data: model.onnx\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            READ_CONF.format(heavy=(*HEAVY, "pandas")),
            str(tmp_path / "fct"),
            str(tmp_path / "other"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    kind, error = proc.stdout.splitlines()
    assert kind == "transformation"
    assert "is not an fct-flavored MLflow model" in error and "(flavors: onnx)" in error


WITHOUT_TORCH = REFUSE_HEAVY + textwrap.dedent(
    """
    from fct_registry.commands import evaluate, resolve
    from fct_registry.errors import FctError

    print(evaluate._wants_torch("cpu"), evaluate._wants_torch("auto"))
    for call in (lambda: evaluate._wants_torch("cuda"), resolve._measuring_modules):
        try:
            call()
        except FctError as exc:
            print(exc)
    """
)


def test_torch_only_paths_name_the_extra_on_a_core_install() -> None:
    """``--device auto`` falls back to NumPy; ``--device cuda`` and ``fct resolve --evaluate``
    fail with one line naming the ``train`` extra instead of a traceback."""
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    devices, cuda, measuring = proc.stdout.splitlines()
    assert devices == "False False"
    assert "--device cuda needs torch" in cuda and "fct-registry[train]" in cuda
    assert "--evaluate and --export-onnx run the chain in PyTorch" in measuring
    assert "fct-registry[train]" in measuring
