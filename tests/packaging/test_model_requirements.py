"""A registered model's own requirements.txt pins only what its pyfunc imports: mlflow-skinny (not
the full mlflow with its server and data-science stack), onnxruntime, numpy and pandas."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from fct_registry.registry import flavor
from tests.registry import builders


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    module, spec = builders.transformation(1, old_dim=6, new_dim=5)
    path = tmp_path_factory.mktemp("requirements") / "m"
    flavor.save_model(module, path, spec=spec)
    return path


def test_saved_model_requirements_are_the_pyfunc_imports_pinned(saved: Path) -> None:
    lines = (saved / "requirements.txt").read_text().splitlines()
    assert lines == [
        f"mlflow-skinny=={version('mlflow-skinny')}",
        f"onnxruntime=={version('onnxruntime')}",
        f"numpy=={version('numpy')}",
        f"pandas=={version('pandas')}",
    ]
    conda = (saved / "conda.yaml").read_text()
    assert "mlflow-skinny==" in conda and "- mlflow==" not in conda and "torch" not in conda


def test_the_shipped_runtime_imports_nothing_outside_its_requirements(saved: Path) -> None:
    (runtime,) = (saved / "code").glob("fct_pyfunc_*.py")
    tree = ast.parse(runtime.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    third_party = imported - set(sys.stdlib_module_names)
    # torch only behind model_config={"backend": "torch"}; yaml comes with mlflow-skinny
    assert third_party - {"torch"} <= {"mlflow", "onnxruntime", "numpy", "yaml"}, third_party
