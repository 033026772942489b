"""Turn any external model source into one ONNX graph + its preprocessing, validated.

The one loader behind ``source: {mlflow | onnx | torchscript | entrypoint}`` in params. Each
kind becomes an ONNX graph with the project's image interface (``images`` ``[N, C, H, W]`` in
[0, 1] -> ``embedding`` ``[N, D]``, normalisation inside the graph): an ONNX file gets a
``(x - mean) / std`` prelude; a PyTorch model (an MLflow pytorch model, a TorchScript file, a
factory with weights) is wrapped with the same normalisation and exported by
:func:`~.onnx_export.export_onnx` (verified against PyTorch). MLflow URIs are resolved here and
nowhere else. Every graph is then run on a probe batch: the output must be ``[N, D]`` with
``D`` the configured width, and finite. Failures are one-line :class:`ExternalModelError`\\ s
naming the params field and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fct_registry._redact import first_line
from fct_registry.config import ModelSource, PreprocessConfig
from fct_registry.errors import FctError
from fct_registry.models.external import ExternalImageModel, external_spec
from fct_registry.registry import onnx_export as _onnx
from fct_registry.registry.checksums import sha256_file

if TYPE_CHECKING:
    from torch import nn

PROBE_BATCH = 3
PREPROCESS_METADATA = "preprocess"  # MLmodel metadata key an MLflow model records it under


class ExternalModelError(FctError):
    """An external model cannot be used as a version (or side-info extractor)."""


@dataclass(frozen=True)
class ExternalModel:
    """A loaded external model: the module (its ONNX graph), its spec and lineage record."""

    module: ExternalImageModel
    spec: dict[str, Any]  # spec.json as written (the registry hashes and logs JSON)
    record: dict[str, Any]
    preprocess: PreprocessConfig


def load_external(
    source: ModelSource,
    preprocess: PreprocessConfig | None,
    *,
    role: str,
    dim: int,
    where: str,
    base: Path = Path("."),
) -> ExternalModel:
    """Load ``source`` (a model kind) as an :class:`ExternalModel` of width ``dim``.

    ``role`` is ``embedding`` or ``side_info``; ``where`` names the params section in errors
    (``versions.2``); local paths are relative to ``base`` (the params file's folder)."""
    kind, spec = source.kind, source.spec
    at = f"{where}.source.{kind}"
    if kind == "mlflow":
        onnx_bytes, uri, sha, recorded = _from_mlflow(spec.uri, preprocess, at, where)
        preprocess = preprocess or recorded
    else:
        if preprocess is None:  # config validation requires it; a library call may not
            raise ExternalModelError(f"{where}.preprocess is required for `source: {kind}`")
        if kind == "onnx":
            path = _local(base, spec.path, f"{at}.path")
            onnx_bytes, uri, sha = _onnx_file(path, preprocess, at), spec.path, sha256_file(path)
        elif kind == "torchscript":
            path = _local(base, spec.path, f"{at}.path")
            onnx_bytes = _torchscript(path, preprocess, at)
            uri, sha = spec.path, sha256_file(path)
        elif kind == "entrypoint":
            weights = _local(base, spec.weights, f"{at}.weights")
            onnx_bytes = _entrypoint(spec.factory, weights, base, preprocess, at)
            uri, sha = f"{spec.factory}?weights={spec.weights}", sha256_file(weights)
        else:
            raise ExternalModelError(f"{at}: not a model source; known: mlflow, onnx, ...")
    assert preprocess is not None
    probe(onnx_bytes, preprocess, dim, where, uri)
    pp = preprocess.model_dump(mode="json")
    record = {"kind": kind, "uri": uri, "sha256": sha, "dim": dim, "preprocess": pp}
    module_spec = external_spec(role, onnx_bytes, preprocess.input_shape, dim, pp) | {
        "source": {"kind": kind, "uri": uri, "sha256": sha}
    }
    spec_json = module_spec.to_dict()
    module = ExternalImageModel(onnx_bytes, preprocess.input_shape, dim)
    return ExternalModel(module.eval(), spec_json, record, preprocess)


# --- the kinds --------------------------------------------------------------------------------


def _local(base: Path, path: str, at: str) -> Path:
    full = (base / path).resolve()
    if not full.is_file():
        raise ExternalModelError(
            f"{at}: {path} not found (relative to the params file's folder {base.resolve()}); "
            "give an existing file"
        )
    return full


def _from_mlflow(
    uri: str, preprocess: PreprocessConfig | None, at: str, where: str
) -> tuple[bytes, str, str, PreprocessConfig | None]:
    """Resolve an MLflow model URI once: its flavor, its files (checksummed) and any recorded
    preprocessing; returns the ONNX graph."""
    import mlflow

    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as exc:  # MlflowException, OSError, ... : all mean "does not resolve"
        first = first_line(exc)[:200]
        raise ExternalModelError(
            f"{at}.uri: {uri} does not resolve ({first}); check the model name, version or "
            "alias and MLFLOW_TRACKING_URI"
        ) from None
    recorded = None
    raw = (info.metadata or {}).get(PREPROCESS_METADATA)
    if raw is not None:
        try:
            recorded = PreprocessConfig.model_validate(raw)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            raise ExternalModelError(
                f"{uri} records preprocessing that is not valid ({msg}); give "
                f"{where}.preprocess in params instead"
            ) from None
    chosen = preprocess or recorded
    if chosen is None:
        raise ExternalModelError(
            f"{where}.preprocess is required: {uri} records no preprocessing (MLmodel metadata "
            "`preprocess`); add preprocess: {resize, crop, mean, std, colour}"
        )
    flavors = info.flavors
    if "onnx" not in flavors and "pytorch" not in flavors:
        raise ExternalModelError(
            f"{at}.uri: {uri} is logged with the flavor(s) {', '.join(sorted(flavors))}; log "
            "it with mlflow.pytorch or mlflow.onnx"
        )
    with tempfile.TemporaryDirectory(prefix="fct-external-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        sha = _tree_sha256(local)
        if "onnx" in flavors:
            graph = _onnx_file(local / flavors["onnx"]["data"], chosen, at)
        else:
            import mlflow.pytorch

            module = mlflow.pytorch.load_model(str(local), map_location="cpu")
            graph = _export_torch(module, chosen, at, uri)
    return graph, uri, sha, recorded


def _call(module: Any, images: Any, pp: PreprocessConfig, at: str) -> Any:
    try:
        out = module(images)
    except Exception as exc:
        first = first_line(exc)[:200]
        raise ExternalModelError(
            f"{at}: preprocessing does not fit the model's input: it fails on images "
            f"{list(images.shape)} ({first}); set preprocess crop/colour to the input the "
            "model reads"
        ) from None
    if getattr(out, "ndim", None) != 2 or out.shape[0] != images.shape[0]:
        shape = list(getattr(out, "shape", [])) or type(out).__name__
        raise ExternalModelError(
            f"{at}: the model's output is {shape}, not [N, D] (one vector per image); give a "
            "model that returns embeddings (e.g. without its classification head, pooled)"
        )
    return out


def _torchscript(path: Path, pp: PreprocessConfig, at: str) -> bytes:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        first = first_line(exc)[:200]
        raise ExternalModelError(
            f"{at}.path: {path.name} is not a TorchScript file ({first}); save it with "
            "torch.jit.save or use `source: {onnx: ...}`"
        ) from None
    return _export_torch(module, pp, at, str(path.name))


@contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def _entrypoint(factory: str, weights: Path, base: Path, pp: PreprocessConfig, at: str) -> bytes:
    import torch

    module_name, fn_name = factory.split(":")
    try:
        with _on_path(base.resolve()):
            fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise ExternalModelError(
            f"{at}.factory: cannot import {factory} ({exc}); install its package or put it "
            "beside the params file"
        ) from None
    module = fn()
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:
        first = first_line(exc)[:200]
        raise ExternalModelError(
            f"{at}.weights: {weights.name} does not load into {factory}() ({first}); give "
            "the state dict saved from that model"
        ) from None
    return _export_torch(module.eval(), pp, at, factory)


def _normalised(module: nn.Module, pp: PreprocessConfig) -> nn.Module:
    import torch
    from torch import nn

    try:
        module.eval()
        frozen = False
    except NotImplementedError:  # torch.export's module (MLflow's pt2 format): eval already
        frozen = True

    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if frozen:  # unregistered, so that eval()/train() never reach it
                object.__setattr__(self, "inner", module)
            else:
                self.inner = module
            self.register_buffer("mean", torch.tensor(pp.mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(pp.std).view(1, -1, 1, 1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.inner((images - self.mean) / self.std)

    return Normalised().eval()


def _export_torch(module: nn.Module, pp: PreprocessConfig, at: str, what: str) -> bytes:
    """A PyTorch model behind the normalisation, as ONNX (checked on a probe batch first, so a
    wrong output shape is named as such, not as an export failure)."""
    import torch

    wrapped = _normalised(module, pp)
    with torch.no_grad():
        _call(wrapped, torch.rand(PROBE_BATCH, *pp.input_shape), pp, at)
    if isinstance(module, torch.jit.ScriptModule):
        return _export_scripted(module, pp, at, what)
    with tempfile.TemporaryDirectory(prefix="fct-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            _onnx.export_onnx(wrapped, path, "embedding", input_shape=pp.input_shape)
        except _onnx.OnnxExportError as exc:
            raise ExternalModelError(
                f"{at}: {what} cannot be exported to ONNX ({exc}); export it yourself and "
                "give `source: {onnx: {path: FILE}}`"
            ) from None
        return path.read_bytes()


def _export_scripted(module: nn.Module, pp: PreprocessConfig, at: str, what: str) -> bytes:
    """A TorchScript module: torch.export cannot trace one, so the TorchScript-based exporter
    writes the module alone (checked numerically like every export), and the normalisation is
    added as for an ONNX file."""
    import torch

    example = _onnx.example_inputs("embedding", input_shape=pp.input_shape)
    with tempfile.TemporaryDirectory(prefix="fct-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with _onnx._quiet(), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(
                    module,
                    example,
                    str(path),
                    dynamo=False,
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                )
            check = _onnx.example_inputs(
                "embedding", batch=_onnx.EXPORT_BATCH + 3, input_shape=pp.input_shape, seed=1
            )
            _onnx.verify_onnx(module, path, check)
        except Exception as exc:
            first = first_line(exc)[:200]
            raise ExternalModelError(
                f"{at}: the TorchScript file {what} cannot be exported to ONNX ({first}); "
                "export it to ONNX yourself and give `source: {onnx: {path: FILE}}`"
            ) from None
        return _onnx_file(path, pp, at)


def _onnx_file(path: Path, pp: PreprocessConfig, at: str) -> bytes:
    """The ONNX model at ``path`` behind a ``(x - mean) / std`` prelude, with the project's
    input and output names."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        first = first_line(exc)[:200]
        raise ExternalModelError(
            f"{at}: {path.name} is not an ONNX model ({first}); give a .onnx file"
        ) from None
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or not graph.output:
        raise ExternalModelError(
            f"{at}: {path.name} takes {len(inputs)} inputs; an image model takes one "
            "[N, C, H, W] tensor"
        )
    original, out = inputs[0], graph.output[0]
    if out.name == _onnx.IMAGE_OUTPUT or original.name == _onnx.IMAGE_INPUT:
        # Rename clashing names so the prelude and the output alias stay distinct.
        _rename(graph, original.name if original.name == _onnx.IMAGE_INPUT else None, out.name)
        original, out = inputs[0], graph.output[0]
    shape = [d.dim_param or d.dim_value for d in original.type.tensor_type.shape.dim]
    c = pp.channels
    mean = numpy_helper.from_array(np.asarray(pp.mean, np.float32).reshape(1, c, 1, 1), "fct_mean")
    std = numpy_helper.from_array(np.asarray(pp.std, np.float32).reshape(1, c, 1, 1), "fct_std")
    graph.initializer.extend([mean, std])
    prelude = [
        helper.make_node("Sub", [_onnx.IMAGE_INPUT, "fct_mean"], ["fct_centred"]),
        helper.make_node("Div", ["fct_centred", "fct_std"], [original.name]),
    ]
    for node in reversed(prelude):
        graph.node.insert(0, node)
    graph.node.append(helper.make_node("Identity", [out.name], [_onnx.IMAGE_OUTPUT]))
    new_in = helper.make_tensor_value_info(
        _onnx.IMAGE_INPUT, TensorProto.FLOAT, ["batch", *(shape[1:] or pp.input_shape)]
    )
    new_out = helper.make_tensor_value_info(_onnx.IMAGE_OUTPUT, TensorProto.FLOAT, None)
    graph.input.remove(original)
    graph.input.insert(0, new_in)
    del graph.output[:]
    graph.output.append(new_out)
    return model.SerializeToString()


def _rename(graph: Any, input_name: str | None, output_name: str) -> None:
    renames = {output_name: f"fct_orig_{output_name}"}
    if input_name:
        renames[input_name] = f"fct_orig_{input_name}"
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)


def probe(onnx_bytes: bytes, pp: PreprocessConfig, dim: int, where: str, uri: str) -> None:
    """Run the graph on a probe batch: the input must fit ``pp``; the output must be
    ``[N, dim]`` and finite."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = first_line(exc)[:200]
        raise ExternalModelError(f"{where}: {uri} is not a valid ONNX graph ({first})") from None
    declared = session.get_inputs()[0].shape
    fixed = [d for d in declared[1:]]
    if len(declared) != 4 or any(
        isinstance(d, int) and d != want for d, want in zip(fixed, pp.input_shape, strict=False)
    ):
        raise ExternalModelError(
            f"{where}.preprocess does not fit the model's input: {uri} reads {declared}, the "
            f"preprocessing gives [N, {', '.join(map(str, pp.input_shape))}]; set crop and "
            "colour to match the model"
        )
    images = np.random.default_rng(0).random((PROBE_BATCH, *pp.input_shape), np.float32)
    try:
        (out,) = session.run(None, {session.get_inputs()[0].name: images})[:1]
    except Exception as exc:
        first = first_line(exc)[:200]
        raise ExternalModelError(
            f"{where}.preprocess does not fit the model's input: {uri} fails on images "
            f"[N, {', '.join(map(str, pp.input_shape))}] ({first}); set crop and colour to "
            "match the model"
        ) from None
    if out.ndim != 2 or out.shape[0] != PROBE_BATCH:
        raise ExternalModelError(
            f"{where}: {uri}'s output is {list(out.shape)}, not [N, D] (one vector per "
            "image); give a model that returns pooled embeddings"
        )
    if out.shape[1] != dim:
        field = "embedding_dim" if where.startswith("versions") else "dim"
        raise ExternalModelError(
            f"{where}: {uri} returns {out.shape[1]}-d vectors but {where}.{field} is {dim}; "
            f"set {field}: {out.shape[1]}"
        )
    if not np.isfinite(out).all():
        raise ExternalModelError(
            f"{where}: {uri} returns non-finite values on a probe batch; check the model and "
            "its preprocessing (mean/std)"
        )


def _tree_sha256(folder: Path) -> str:
    """One sha256 over every file below ``folder`` (relative path and content)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()
