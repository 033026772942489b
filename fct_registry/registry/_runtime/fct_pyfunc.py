"""fct_pyfunc: the MLflow pyfunc runtime of fct-registry models, shipped inside each model.

``fct_registry.registry.flavor.save_model`` copies this one file into the model folder
(``code/fct_pyfunc.py``, MLflow's ``code_paths``) and names it as the pyfunc ``loader_module``, so
a logged model loads and serves wherever its own ``requirements.txt`` is installed (mlflow,
onnxruntime, numpy): no torch, no fct-registry. It therefore imports nothing from
``fct_registry`` (only the optional ``backend: torch`` does, and says so when it is missing).

What it does, in order: verify every file's sha256 against ``checksums.json``, open the ONNX
graph with onnxruntime, and on each ``predict`` check the inputs (names, dtype, shape, values)
before running the graph. MLflow enforces the model's signature first (named float32 tensors);
the checks here repeat it for callers without a signature and add what a signature cannot say:
images must be floats in [0, 1], embeddings finite.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FLAVOR_NAME = "fct"
CHECKSUMS_FILE = "checksums.json"
BACKENDS = ("onnx", "torch")

OLD_INPUT = "old_embedding"
SIDE_INFO_INPUT = "side_info"
TRANSFORMATION_OUTPUT = "new_embedding"
IMAGE_INPUT = "images"
IMAGE_OUTPUT = "embedding"
IMAGE_RANGE = (0.0, 1.0)
_RANGE_SLACK = 1e-6  # float rounding of already-scaled pixels
_CHUNK = 1 << 20


def _error(message: str, *, checksum: bool = False) -> Exception:
    """An MlflowException (a 400 from ``mlflow models serve``) naming the problem and the fix."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, INVALID_STATE

    return MlflowException(
        message, error_code=INVALID_STATE if checksum else INVALID_PARAMETER_VALUE
    )


# --- the model folder ----------------------------------------------------------------------------


def read_conf(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``fct`` section of the folder's MLmodel."""
    import yaml

    mlmodel = Path(path) / "MLmodel"
    if not mlmodel.is_file():
        raise _error(f"{path} has no MLmodel file; pass the folder of a logged fct model")
    flavors = yaml.safe_load(mlmodel.read_text()).get("flavors", {})
    if FLAVOR_NAME not in flavors:
        raise _error(f"{path} is not an fct-flavored model (flavors: {', '.join(flavors)})")
    return flavors[FLAVOR_NAME]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check every file listed in ``checksums.json`` against its sha256 before anything runs."""
    root = Path(path)
    listed = root / CHECKSUMS_FILE
    if not listed.is_file():
        raise _error(f"{listed} is missing, so the model cannot be verified; re-log the model")
    sums = json.loads(listed.read_text())
    for rel, want in sums.items():
        file = root / rel
        if not file.is_file():
            raise _error(f"{root}: artifact file {rel} is missing; restore it", checksum=True)
        got = sha256_file(file)
        if got != want:
            raise _error(
                f"{root}: artifact file {rel} has sha256 {got[:12]}…, but {want[:12]}… was "
                "recorded when the model was logged; the file was modified or corrupted: "
                "restore it or re-register the model",
                checksum=True,
            )
    return sums


def input_shapes(conf: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each graph input's shape after the batch dimension, in the graph's order."""
    if conf["kind"] != "transformation":
        return {IMAGE_INPUT: tuple(int(d) for d in conf["input_shape"])}
    shapes = {OLD_INPUT: (int(conf["old_dim"]),)}
    if conf.get("side_info_dim"):
        shapes[SIDE_INFO_INPUT] = (int(conf["side_info_dim"]),)
    return shapes


# --- pyfunc --------------------------------------------------------------------------------------


def _load_pyfunc(path: str, model_config: Mapping[str, Any] | None = None) -> FctPyfunc:
    """Called by ``mlflow.pyfunc.load_model``; verifies checksums before anything runs."""
    backend = (model_config or {}).get("backend", "onnx")
    if backend not in BACKENDS:
        raise _error(f"unknown backend {backend!r} in model_config; known: {', '.join(BACKENDS)}")
    conf = read_conf(path)
    verify_files(path)
    if backend == "torch":
        # The PyTorch backend runs the safetensors weights, so it needs fct-registry itself:
        # an optional package for this shipped module (and importing it statically would make
        # fct_registry.registry.flavor, which ships this file, depend on its own payload).
        try:
            load_local = importlib.import_module("fct_registry.registry.flavor").load_local
        except ImportError as exc:
            raise _error(
                "model_config backend 'torch' needs fct-registry (and torch) installed; "
                "use the default 'onnx' backend, which needs only onnxruntime"
            ) from exc
        return FctPyfunc(conf, module=load_local(path, verify=False))
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(Path(path) / conf["onnx"]), options, providers=["CPUExecutionProvider"]
    )
    return FctPyfunc(conf, session=session)


class FctPyfunc:
    """Transformations take ``{"old_embedding": [N, d_old], "side_info": [N, d_s]}``
    (``side_info`` only when a hop reads it); image models take float32 images ``[N, C, H, W]``
    in [0, 1] (``{"images": ...}`` or the bare array). A dict of arrays or a DataFrame of list
    columns; ``predict`` returns a float32 array ``[N, d_new]``."""

    def __init__(self, conf: dict[str, Any], *, module: Any = None, session: Any = None) -> None:
        self.conf, self.module, self.session = conf, module, session
        self.shapes = input_shapes(conf)

    def get_raw_model(self) -> Any:
        return self.module if self.module is not None else self.session

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        feeds = self.feeds(data)
        if self.session is not None:
            return self.session.run(None, feeds)[0]
        import torch

        tensors = [torch.from_numpy(feeds[n]) for n in self.shapes]
        if self.conf["kind"] == "transformation" and len(tensors) == 1:
            tensors.append(tensors[0].new_zeros(len(tensors[0]), 0))
        with torch.no_grad():
            return self.module(*tensors).numpy()

    def feeds(self, data: Any) -> dict[str, np.ndarray]:
        """The graph's inputs from ``data``, checked (see the module docstring)."""
        names = list(self.shapes)
        kind = self.conf["kind"]
        if not isinstance(data, Mapping) and not hasattr(data, "columns"):
            if len(names) != 1:
                raise _error(f"this {kind} model takes named inputs {names}; pass a dict")
            data = {names[0]: data}
        feeds = {}
        for name in names:
            if name not in data:
                raise _error(f"missing input {name!r}; this {kind} model takes {', '.join(names)}")
            feeds[name] = self._array(name, data[name])
        rows = {len(v) for v in feeds.values()}
        if len(rows) > 1:
            raise _error(
                f"inputs have different numbers of rows {sorted(rows)}; pass one row per item "
                "in every input"
            )
        return feeds

    def _array(self, name: str, value: Any) -> np.ndarray:
        if hasattr(value, "to_numpy"):  # a DataFrame column of lists / arrays
            value = np.stack([np.asarray(row) for row in value.to_numpy()])
        value = np.asarray(value)
        if value.dtype.kind not in "f":
            hint = (
                "; scale uint8 pixels to [0, 1] (divide by 255) and pass float32"
                if name == IMAGE_INPUT
                else "; pass float32 embeddings"
            )
            raise _error(f"input {name!r} has dtype {value.dtype}, expected float32{hint}")
        value = np.ascontiguousarray(value, dtype=np.float32)
        want = self.shapes[name]
        if value.shape[1:] != want or value.ndim != len(want) + 1:
            raise _error(
                f"input {name!r} has shape {list(value.shape)}, expected "
                f"[N, {', '.join(str(d) for d in want)}]"
            )
        if not np.isfinite(value).all():
            raise _error(f"input {name!r} holds NaN or infinite values; pass finite numbers")
        if name == IMAGE_INPUT and value.size:
            low, high = float(value.min()), float(value.max())
            if low < IMAGE_RANGE[0] - _RANGE_SLACK or high > IMAGE_RANGE[1] + _RANGE_SLACK:
                hint = " (looks like 0-255 pixels: divide by 255)" if high > 2 else ""
                raise _error(
                    f"input {name!r} has values in [{low:g}, {high:g}], outside [0, 1]: this "
                    f"model takes float images scaled to [0, 1]{hint}"
                )
        return value
