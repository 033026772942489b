"""The ``fct`` MLflow flavor: a transformation, a resolved chain, or an image model as one model.

Shaped like MLflow's own flavors (``mlflow.onnx``, ``mlflow.pytorch``): :func:`save_model`,
:func:`log_model` (delegating to :meth:`mlflow.models.Model.log`), :func:`load_model` and
:func:`_load_pyfunc`, so that ::

    mlflow.pyfunc.load_model("models:/fashion-transformations/1").predict(
        {"old_embedding": old, "side_info": side_info})

upgrades stored embeddings anywhere the model's own ``requirements.txt`` is installed
(mlflow-skinny, onnxruntime, numpy, pandas: no torch, no fct-registry). Heavy imports (torch,
onnxruntime, mlflow) happen inside functions.

A saved model folder holds no pickle::

    MLmodel                      flavor conf: kind, every hop's spec, dims, checksums; signature
    modules/<i>/model.safetensors, modules/<i>/spec.json     one folder per hop, in order
    model.onnx                   the whole model (or chain) as one graph, checked against PyTorch
    code/fct_pyfunc_<sha>.py     the pyfunc runtime (:mod:`._runtime.fct_pyfunc`), shipped along
    checksums.json               sha256 of all the above, verified before anything runs
    input_example.json, serving_input_example.json, requirements.txt, python_env.yaml, ...

Transformations and chains load as :class:`~fct_registry.models.TransformationChain` (forward
``(old, side_info)``); embedding and side-info models as themselves (forward ``(images)``). The
pyfunc (loader module ``fct_pyfunc_<sha>``, from the model's ``code/``) runs the ONNX graph with
onnxruntime by default (``model_config={"backend": "torch"}`` runs the safetensors weights in
PyTorch instead, and needs this package). Every model carries a signature of named float32
tensors with their shapes, and an input example; the pyfunc refuses other dtypes, shapes,
non-finite values and images outside [0, 1]. The MLmodel also declares MLflow's ``onnx`` flavor,
so ``mlflow.onnx.load_model(uri)`` returns the graph itself.

Describing a model (kind, dims, name, signature, requirements) is :mod:`.flavor_spec`; the
MLmodel conf and checksums of a saved folder are :mod:`.flavor_files`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fct_registry import __version__
from fct_registry.models.external import ExternalImageModel
from fct_registry.models.io import load_model as load_hop
from fct_registry.models.io import save_model as save_module
from fct_registry.models.transformations import TransformationChain
from fct_registry.registry import onnx_export as _onnx
from fct_registry.registry import tags as fct_tags
from fct_registry.registry._runtime import fct_pyfunc as _runtime
from fct_registry.registry.checksums import (
    checksums_digest,
    content_hash,
    verify_checksums,
    write_checksums,
)
from fct_registry.registry.flavor_files import (
    FLAVOR_NAME,
    FlavorError,
    _pin_registered_version,
    flavor_conf,
    verify_registered,
)
from fct_registry.registry.flavor_spec import (
    ModelSource,
    default_name,
    default_pip_requirements,
    describe,
    input_example,
    normalise,
    package_version,
    signature,
    specs_of,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import Model, ModelInfo
    from torch import nn

MODULES_DIR = "modules"
ONNX_FILE = "model.onnx"
CODE_DIR = "code"
RUNTIME_MODULE = "fct_pyfunc"  # the loader module's name, before its content hash
BACKENDS = _runtime.BACKENDS

# --- saving ------------------------------------------------------------------------------------


def runtime_file() -> tuple[str, bytes]:
    """The shipped runtime's module name and source. MLflow puts each loaded model's ``code/`` on
    ``sys.path`` and imports the loader module by name, and Python keeps the first module of a
    name: one fixed name would make every model loaded later in a process run the first model's
    runtime. Named by its content, two models share a module only when their runtimes are the
    same bytes."""
    source = Path(_runtime.__file__).read_bytes()
    return f"{RUNTIME_MODULE}_{hashlib.sha256(source).hexdigest()[:16]}", source


def save_model(
    model: ModelSource,
    path: str | os.PathLike,
    *,
    spec: Mapping[str, Any] | None = None,
    specs: Sequence[Mapping[str, Any]] | None = None,
    mlflow_model: Model | None = None,
    onnx_atol: float = 1e-5,
    metadata: dict[str, Any] | None = None,
    pip_requirements: Sequence[str] | None = None,
    extra_pip_requirements: Sequence[str] | None = None,
) -> None:
    """Save ``model`` as an fct-flavored MLflow model folder at ``path`` (must be new or empty).

    Writes every hop's safetensors + spec, exports the whole model to ONNX and verifies the graph
    against PyTorch (``onnx_atol``; fails with :class:`~.onnx_export.OnnxExportError`), then
    records sha256 checksums and the MLmodel. The content hash lands in the flavor conf.
    """
    import mlflow
    import yaml
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.models.utils import _save_example
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _mlflow_conda_env,
        _PythonEnv,
    )
    from mlflow.utils.model_utils import _validate_and_prepare_target_save_path

    modules, hop_specs = normalise(model, spec, specs)
    kind = hop_specs[0]["kind"]
    dims = describe(hop_specs)
    path = Path(os.path.abspath(path))
    _validate_and_prepare_target_save_path(str(path))

    files: list[str] = []
    module_dirs: list[str] = []
    for i, (module, hop_spec) in enumerate(zip(modules, hop_specs, strict=True)):
        rel = f"{MODULES_DIR}/{i}"
        save_module(module, dict(hop_spec), path / rel)
        module_dirs.append(rel)
        files += [f"{rel}/model.safetensors", f"{rel}/spec.json"]

    whole = TransformationChain(list(modules)) if kind == "transformation" else modules[0]
    if isinstance(whole, ExternalImageModel):  # given as ONNX already: the graph is the model
        (path / ONNX_FILE).write_bytes(whole.onnx_bytes)
        max_diff = 0.0
    else:
        max_diff = _onnx.export_onnx(
            whole,
            path / ONNX_FILE,
            kind,
            old_dim=dims.get("old_dim"),
            side_info_dim=dims.get("side_info_dim", 0),
            input_shape=dims.get("input_shape"),
            atol=onnx_atol,
        )
    files.append(ONNX_FILE)
    # The pyfunc runtime travels with the model, so serving needs no fct-registry install.
    loader_module, runtime_source = runtime_file()
    (path / CODE_DIR).mkdir()
    (path / CODE_DIR / f"{loader_module}.py").write_bytes(runtime_source)
    files.append(f"{CODE_DIR}/{loader_module}.py")
    sums = write_checksums(path, files)

    mlflow_model = mlflow_model or Model()
    if metadata is not None:
        mlflow_model.metadata = metadata
    mlflow_model.signature = signature(kind, dims)
    _save_example(mlflow_model, input_example(kind, dims), str(path))
    mlflow.pyfunc.add_to_model(
        mlflow_model,
        loader_module=loader_module,
        code=CODE_DIR,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
        model_config={"backend": "onnx"},
    )
    mlflow_model.add_flavor(
        FLAVOR_NAME,
        kind=kind,
        chain=len(modules) > 1,
        modules=module_dirs,
        specs=[dict(s) for s in hop_specs],
        onnx=ONNX_FILE,
        onnx_max_abs_diff=max_diff,
        inputs=_onnx.input_names(kind, dims.get("side_info_dim", 0)),
        output=_onnx.output_name(kind),
        checksums=sums,
        content_hash=content_hash(modules, hop_specs),
        fct_registry_version=__version__,
        # An external model's preprocessing, which `fct embed` applies by default.
        **({"preprocess": hop_specs[0]["preprocess"]} if "preprocess" in hop_specs[0] else {}),
        **{k: v for k, v in dims.items() if k != "kind"},
    )
    # MLflow's own ONNX flavor over the same graph: mlflow.onnx.load_model(uri) works too.
    mlflow_model.add_flavor(
        "onnx",
        onnx_version=package_version("onnx"),
        data=ONNX_FILE,
        providers=["CPUExecutionProvider"],
        code=None,
    )
    mlflow_model.save(str(path / MLMODEL_FILE_NAME))

    requirements = list(pip_requirements or default_pip_requirements())
    requirements += list(extra_pip_requirements or [])
    (path / _REQUIREMENTS_FILE_NAME).write_text("\n".join(requirements) + "\n")
    conda = _mlflow_conda_env(additional_pip_deps=requirements)
    (path / _CONDA_ENV_FILE_NAME).write_text(yaml.safe_dump(conda, default_flow_style=False))
    _PythonEnv.current().to_yaml(str(path / _PYTHON_ENV_FILE_NAME))


def log_model(
    model: ModelSource,
    name: str | None = None,
    *,
    spec: Mapping[str, Any] | None = None,
    specs: Sequence[Mapping[str, Any]] | None = None,
    registered_model_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    onnx_atol: float = 1e-5,
    metadata: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    pip_requirements: Sequence[str] | None = None,
    extra_pip_requirements: Sequence[str] | None = None,
    await_registration_for: int = 300,
) -> ModelInfo:
    """Log ``model`` (see :func:`save_model`) to the active run, or a new one, as a LoggedModel.

    A chain of hops logs as one model: pass a ``TransformationChain`` or a list of hop modules
    with ``specs`` (one per hop, in order), or a list of hop folders. ``name`` (the LoggedModel's
    name) defaults to one that says what the model is (:func:`default_name`). With
    ``registered_model_name`` a model version is created (see :func:`register_logged_model`)
    with ``description`` (markdown); ``ModelInfo.registered_model_version`` holds its number.
    ``tags`` go on the version and the LoggedModel. Registration here does not deduplicate:
    check :func:`fct_registry.registry.register.find_version` first for idempotency.
    """
    from mlflow.models import Model

    if name is None:
        name = default_name(specs_of(model, spec, specs))
    # MLflow records the environment variables read while a model is logged by patching
    # os.environ for the whole process; another thread reading one meanwhile (the registration
    # lock's heartbeat) breaks it ("Set changed size during iteration"). These models need none.
    os.environ.setdefault("MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING", "false")
    info = Model.log(
        None,
        sys.modules[__name__],
        name=name,
        model=model,
        spec=spec,
        specs=specs,
        onnx_atol=onnx_atol,
        metadata=metadata,
        params=params,
        tags={k: str(v) for k, v in (tags or {}).items()} or None,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
    )
    if registered_model_name is not None:
        version = register_logged_model(
            info,
            registered_model_name,
            tags=tags,
            description=description,
            await_creation_for=await_registration_for,
        )
        info.registered_model_version = int(version.version)
    return info


def register_logged_model(
    info: ModelInfo,
    name: str,
    *,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    await_creation_for: int = 300,
    client: Any = None,
) -> ModelVersion:
    """Create a version of registered model ``name`` (created if missing) from a logged model,
    as ``mlflow.register_model`` does: the version's ``source`` and ``model_id`` name the
    LoggedModel, whose ``mlflow.modelVersions`` tag lists the version (the UI's "registered
    versions"). Tagged with the content hash and the digest of ``checksums.json`` (the
    registry's record, which artifact-store tampering cannot reach)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    client = client or MlflowClient()
    conf = info.flavors.get(FLAVOR_NAME)
    if conf is None:
        raise FlavorError(
            f"{info.model_uri} was not logged with the {FLAVOR_NAME} flavor; log "
            "it with fct_registry.registry.flavor.log_model"
        )
    version_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    version_tags.update(
        {
            fct_tags.CONTENT_HASH: conf["content_hash"],
            fct_tags.CHECKSUMS_SHA256: checksums_digest(conf["checksums"]),
        }
    )
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = client.create_model_version(
        name,
        source=info.model_uri,
        run_id=info.run_id,
        tags=version_tags,
        description=description,
        await_creation_for=await_creation_for,
        model_id=info.model_id,
    )
    if info.model_id:
        # One logged model is registered once, so this read-modify-write has no competitor.
        logged = client.get_logged_model(info.model_id)
        listed = json.loads(logged.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
        listed.append({"name": version.name, "version": version.version})
        client.set_logged_model_tags(info.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(listed)})
    return version


# --- loading -----------------------------------------------------------------------------------


def load_model(
    model_uri: str, dst_path: str | os.PathLike | None = None, *, verify: bool = True
) -> nn.Module:
    """Download and rebuild a model logged with this flavor, in eval mode on the CPU.

    Transformations and chains come back as a ``TransformationChain`` (forward
    ``(old, side_info)``; a hop without side-info ignores it), image models as themselves. With
    ``verify`` (default) every file's sha256 is checked first against ``checksums.json`` and, for
    a ``models:/name/<version|@alias>`` URI, against the version's record
    (:func:`verify_registered`); a mismatch raises :class:`~.checksums.ChecksumError` naming
    the file. Weights are read with safetensors and specs as JSON: nothing is unpickled.
    """
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    uri, version_tags = _pin_registered_version(model_uri) if verify else (model_uri, None)

    def _load(local: Path) -> Any:
        if version_tags is not None:
            verify_registered(local, version_tags, what=model_uri)
        return load_local(local, verify=verify and version_tags is None, what=model_uri)

    if dst_path is None:
        # Always into a local cache: for a local artifact store MLflow would hand back the
        # store's own folder and write its registered_model_meta file there (a read-only store
        # then fails). The weights are in memory once loaded, so the cache goes with the call.
        with tempfile.TemporaryDirectory(prefix="fct-model-") as cache:
            return _load(Path(_download_artifact_from_uri(artifact_uri=uri, output_path=cache)))
    return _load(Path(_download_artifact_from_uri(artifact_uri=uri, output_path=str(dst_path))))


def load_local(
    path: str | os.PathLike,
    *,
    expected: Mapping[str, str] | None = None,
    verify: bool = True,
    what: str | None = None,
) -> nn.Module:
    """:func:`load_model` for a model folder already on disk."""

    path = Path(path)
    conf = flavor_conf(path)
    if verify:
        verify_checksums(path, expected, what=what)
    modules = [load_hop(path / rel)[0] for rel in conf["modules"]]
    if conf["kind"] == "transformation":
        return TransformationChain(modules).eval()
    return modules[0]


# --- pyfunc ------------------------------------------------------------------------------------


def _load_pyfunc(path: str, model_config: Mapping[str, Any] | None = None) -> Any:
    """The loader of models saved before the runtime shipped with them (``loader_module`` was
    this module): the same runtime, from this package."""
    return _runtime._load_pyfunc(path, model_config)
