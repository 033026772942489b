"""What an ``fct`` flavor model is, before anything is written: its hops' specs checked and
described (kind, dims), its name, MLflow signature and input example, and the pip requirements
of its pyfunc. :mod:`.flavor` saves, logs and loads it."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from fct_registry.models.io import build_from_spec
from fct_registry.models.io import load_model as load_hop
from fct_registry.models.transformations import TransformationChain
from fct_registry.registry import onnx_export as _onnx
from fct_registry.registry._runtime import fct_pyfunc as _runtime
from fct_registry.registry.flavor_files import FlavorError

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

EXAMPLE_ROWS = 2

ModelSource: TypeAlias = (
    "nn.Module | Sequence[nn.Module] | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]"
)
"""What :func:`save_model`/:func:`log_model` accept: a module with ``spec``, a
``TransformationChain`` or a list of hop modules with ``specs``, or pipeline model folders
(``model.safetensors`` + ``spec.json``; one folder, or a list of hop folders)."""


def signature(kind: str, dims: Mapping[str, Any]) -> Any:
    """The model's MLflow signature: named float32 tensors with a free batch dimension."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    f32 = np.dtype(np.float32)
    inputs = [
        TensorSpec(f32, (-1, *shape), name)
        for name, shape in _runtime.input_shapes({"kind": kind, **dims}).items()
    ]
    output = TensorSpec(f32, (-1, int(dims["output_dim"])), _onnx.output_name(kind))
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([output]))


def input_example(kind: str, dims: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A small valid input (images in [0, 1]), saved with the model for the UI and serving."""
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = _runtime.input_shapes({"kind": kind, **dims})
    if kind == "transformation":
        return {n: rng.standard_normal((EXAMPLE_ROWS, *s), np.float32) for n, s in shapes.items()}
    return {n: rng.random((EXAMPLE_ROWS, *s), np.float32) for n, s in shapes.items()}


def describe(specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Kind and interface dims of a model given its hops' specs (validated: a chain's hops must
    be transformations whose widths connect, reading one side-info width)."""
    kinds = {s.get("kind") for s in specs}
    if len(kinds) != 1:
        raise FlavorError(
            f"hops of one model must share a kind, got {sorted(map(str, kinds))}; "
            "log transformations and image models separately"
        )
    kind = specs[0].get("kind")
    if kind in ("embedding", "side_info"):
        if len(specs) != 1:
            raise FlavorError(
                f"an {kind} model is one module, got {len(specs)}; only transformations chain"
            )
        s = specs[0]
        dim = s["embedding_dim"] if kind == "embedding" else s["dim"]
        return {"kind": kind, "input_shape": list(s["input_shape"]), "output_dim": dim}
    if kind != "transformation":
        raise FlavorError(
            f"unknown model kind {kind!r} in spec; expected embedding, side_info or transformation"
        )
    for a, b in itertools.pairwise(specs):
        if a["new_dim"] != b["old_dim"]:
            raise FlavorError(
                f"chain hops do not connect: a hop produces {a['new_dim']}-d "
                f"embeddings but the next reads {b['old_dim']}-d; order hops "
                "from the oldest version to the newest"
            )
    side_dims = {s["side_info_dim"] for s in specs if s["side_info_dim"]}
    if len(side_dims) > 1:
        raise FlavorError(
            f"chain hops read side-info of different widths {sorted(side_dims)}; "
            "every hop must read the same side-info extractor"
        )
    return {
        "kind": kind,
        "old_dim": specs[0]["old_dim"],
        "output_dim": specs[-1]["new_dim"],
        "side_info_dim": side_dims.pop() if side_dims else 0,
        "hops": len(specs),
    }


def normalise(
    model: ModelSource, spec: Mapping[str, Any] | None, specs: Sequence[Mapping[str, Any]] | None
) -> tuple[list[nn.Module], list[dict]]:
    from torch import nn

    if isinstance(model, (str, os.PathLike)) or (
        isinstance(model, Sequence) and model and isinstance(model[0], (str, os.PathLike))
    ):
        folders = [model] if isinstance(model, (str, os.PathLike)) else list(model)
        if spec is not None or specs is not None:
            raise FlavorError("model folders carry their own spec.json; do not pass spec/specs")
        loaded = [load_hop(Path(f)) for f in folders]
        return [m for m, _ in loaded], [dict(s) for _, s in loaded]
    if isinstance(model, TransformationChain):
        modules = list(model.hops)
    elif isinstance(model, nn.Module):
        modules = [model]
    elif isinstance(model, Sequence) and model and all(isinstance(m, nn.Module) for m in model):
        modules = list(model)
    else:
        raise FlavorError(
            f"cannot save a {type(model).__name__}; pass an nn.Module with spec=, "
            "a TransformationChain or list of modules with specs=, or model folders"
        )
    if (spec is None) == (specs is None):
        raise FlavorError("pass exactly one of spec= (one module) or specs= (one per hop)")
    hop_specs = [dict(spec)] if spec is not None else [dict(s) for s in specs or []]
    if len(hop_specs) != len(modules):
        raise FlavorError(f"{len(modules)} hops but {len(hop_specs)} specs; pass one spec per hop")
    describe(hop_specs)
    for module, hop_spec in zip(modules, hop_specs, strict=True):
        try:  # the spec must rebuild this exact module, or loading would fail later
            build_from_spec(hop_spec).load_state_dict(module.state_dict())
        except (RuntimeError, KeyError) as exc:
            raise FlavorError(
                f"spec {hop_spec.get('kind')!r} does not describe the module "
                f"({str(exc).splitlines()[0]}); pass the spec it was built from"
            ) from exc
    return modules, hop_specs


def default_name(specs: Sequence[Mapping[str, Any]]) -> str:
    """A LoggedModel name that says what the model is, e.g. ``transformation-64d-to-96d``,
    ``chain-2-hops-64d-to-128d``, ``embedding-smallcnn-64d``, ``side-info-32d``."""
    if not specs:
        return "model"
    dims = describe(specs)
    kind = dims["kind"]
    if kind == "transformation":
        what = "transformation" if len(specs) == 1 else f"chain-{len(specs)}-hops"
        return f"{what}-{dims['old_dim']}d-to-{dims['output_dim']}d"
    backbone = specs[0].get("backbone") or specs[0].get("name")
    label = f"-{backbone}" if isinstance(backbone, str) and backbone.isidentifier() else ""
    return f"{kind.replace('_', '-')}{label}-{dims['output_dim']}d"


def specs_of(
    model: ModelSource, spec: Mapping[str, Any] | None, specs: Sequence[Mapping[str, Any]] | None
) -> list[Mapping[str, Any]]:
    """The hops' specs without loading weights (for naming)."""
    if spec is not None:
        return [spec]
    if specs is not None:
        return list(specs)
    folders = [model] if isinstance(model, (str, os.PathLike)) else model
    if isinstance(folders, Sequence) and all(isinstance(f, (str, os.PathLike)) for f in folders):
        return [json.loads((Path(f) / "spec.json").read_text()) for f in folders]
    return []


# What the pyfunc runtime imports (code/fct_pyfunc.py: numpy, onnxruntime, mlflow's pyfunc,
# which needs pandas), and nothing more: mlflow-skinny, not the full mlflow whose server, UI and
# data-science dependencies made a serving venv ~936 MB (docs/install.md has today's size).
PYFUNC_REQUIREMENTS = ("mlflow-skinny", "onnxruntime", "numpy", "pandas")


def default_pip_requirements() -> list[str]:
    """What the pyfunc needs where the model is loaded, pinned to this environment's versions:
    all on PyPI, no torch and no fct-registry (the runtime ships in the model's ``code/``)."""
    return [f"{name}=={package_version(name)}" for name in PYFUNC_REQUIREMENTS]


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
