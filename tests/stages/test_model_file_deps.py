"""A model file params name must be a DVC dep of its stage, or the stage refuses to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from fct_registry.config import ModelSource
from fct_registry.errors import ConfigError
from fct_registry.stages.dvc_deps import check_model_files_listed

DVC_YAML = """stages:
  train:
    foreach: [1, 2]
    do:
      cmd: python -m pipelines.train_version --version ${{item}}
      deps:
        - fct_registry/models
{extra}
        - outputs/data
"""


def _write(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "dvc.yaml"
    path.write_text(DVC_YAML.format(extra=extra))
    return path


def test_a_listed_file_passes(tmp_path):
    check_model_files_listed(
        "train", ["models/v1.onnx"], _write(tmp_path, "        - models/v1.onnx")
    )


def test_a_missing_file_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        check_model_files_listed("train", ["models/v1.onnx"], _write(tmp_path))
    message = str(err.value)
    assert "models/v1.onnx" in message and "'train'" in message
    assert "stage_deps.py --write --model-files" in message


def test_nothing_to_check_without_dvc_yaml_or_files(tmp_path):
    check_model_files_listed("train", ["models/v1.onnx"], tmp_path / "dvc.yaml")
    check_model_files_listed("side_info", [], _write(tmp_path))


def test_local_files_of_each_kind(tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "enc.py").write_text("")
    onnx = ModelSource.model_validate({"onnx": {"path": "models/v1.onnx"}})
    entry = ModelSource.model_validate(
        {"entrypoint": {"factory": "mypkg.enc:build", "weights": "w/enc.pt"}}
    )
    installed = ModelSource.model_validate(
        {"entrypoint": {"factory": "otherpkg.enc:build", "weights": "w/enc.pt"}}
    )
    mlflow = ModelSource.model_validate({"mlflow": {"uri": "models:/enc/1"}})
    assert onnx.local_files(tmp_path) == ["models/v1.onnx"]
    assert entry.local_files(tmp_path) == ["mypkg/enc.py", "w/enc.pt"]
    assert installed.local_files(tmp_path) == ["w/enc.pt"]
    assert mlflow.local_files(tmp_path) == []
