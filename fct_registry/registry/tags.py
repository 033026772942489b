"""Every MLflow tag key the project writes, namespaced ``fct.*``, and the registry's naming.

Layout in the MLflow Model Registry, for a family ``F`` (e.g. ``fashion``):

* registered model ``F``: the embedding-model versions. MLflow's version number *is* the family
  version, so ``F@3`` is ``models:/F/3``.
* registered model ``F-side-info``: side-info extractors.
* registered model ``F-transformations``: every transformation (and registered chains), each
  version tagged with its two ends (``fct.from`` / ``fct.to``, family version numbers) and the
  side-info extractor it reads.

Links live in version tags (not in LoggedModel metadata, which MLflow does not keep reliably under
concurrency): from an embedding version you reach its side-info extractor and the
transformations into and out of it; from a transformation, its two ends.

Also: the alias ``pipeline-<key>`` names the version a ``params.yaml`` key last registered; the
experiment ``fct-F`` holds one run per registered model (params, metrics, history); the
registered model ``F-registration-lock`` exists only while a registration holds the family's
lock (see :mod:`fct_registry.registry.register`).
"""

from __future__ import annotations

import re

from fct_registry.registry.errors import RegistryError

# --- what a version is -------------------------------------------------------------------------
ROLE = "fct.role"
ROLE_EMBEDDING = "embedding"
ROLE_SIDE_INFO = "side_info"
ROLE_TRANSFORMATION = "transformation"
ROLE_CHAIN = "chain"
ROLE_GATE = "gate"  # on runs of the family's experiment: one recorded gate evaluation

FAMILY = "fct.family"
CONTENT_HASH = "fct.content_hash"  # sha256 over the model's files: registering is idempotent
CHECKSUMS_SHA256 = "fct.checksums_sha256"  # sha256 of the model's checksums.json (its record)
CHECKSUMS = "fct.checksums"  # older versions: the JSON {artifact path: sha256} itself
EMBEDDING_DIM = "fct.embedding_dim"
PIPELINE_KEY = "fct.pipeline_key"  # the params.yaml key the version was trained from
GIT_COMMIT = "fct.git_commit"
DATASET = "fct.dataset"
CLASSES = "fct.classes"  # JSON list of the class ids an embedding version was trained on
DATA_SHA256 = "fct.data_sha256"  # sha256 of the prepared training split it was trained from
PARAMS = "fct.params"  # canonical JSON of the params.yaml sections it was trained from
ONNX_MAX_ABS_DIFF = "fct.onnx_max_abs_diff"  # ONNX vs PyTorch, checked at registration
GIVEN_SOURCE = "fct.source"  # given, not trained: canonical JSON of its tables' URIs and sha256
# An external model (source: mlflow/onnx/torchscript/entrypoint): fct.source holds its kind,
# original URI and sha256; fct.preprocess the canonical JSON of its preprocessing.
PREPROCESS = "fct.preprocess"

# --- links -------------------------------------------------------------------------------------
SIDE_INFO = "fct.side_info"  # "<model name>/<version>" of the side-info extractor
TRAINED_WITH = "fct.trained_with"  # side-info: params key of the version whose images it saw
SIDE_INFO_DIM = "fct.side_info_dim"
SOURCE = "fct.from"  # family version number the transformation reads
TARGET = "fct.to"  # family version number it produces
HOPS = "fct.hops"  # for chains: comma-separated transformation versions, in order
TRANSFORMS_IN = "fct.transformations_in"  # on embedding versions: comma-separated versions
TRANSFORMS_OUT = "fct.transformations_out"
KIND = "fct.kind"  # transformation kind: fct | fct-no-side-info | fct-uncertainty | ...
KIND_UNCERTAINTY = "fct-uncertainty"  # predicts a per-row uncertainty (models.uncertainty.KIND)

# --- measured accuracy (percent, leave-one-out on the held-out split) --------------------------
TOP1 = "fct.top1"
TOP5 = "fct.top5"
MAP = "fct.mAP"
GAP_CLOSED_TOP1 = "fct.gap_closed_top1"
GAP_CLOSED_MAP = "fct.gap_closed_mAP"
# Provenance of the numbers above: the id of the MLflow run that logged them. The tool writes it
# together with them (registration, recorded chains); the resolver takes a fct.top1 as a
# measurement only beside it, so a number set by hand is never mistaken for one.
MEASURED_RUN = "fct.measured_run"

# --- release gate ------------------------------------------------------------------------------
GATE_VERDICT = "fct.gate.verdict"  # pass | fail
GATE_REPORT = "fct.gate.report"  # JSON summary
GATE_RUN = "fct.gate.run"  # on the version: run id of its latest verdict's history entry
# On each gate run (``fct.role=gate``, experiment ``fct-F``), with GATE_VERDICT:
GATE_CANDIDATE = "fct.gate.candidate"  # family version number judged
GATE_BASELINE = "fct.gate.baseline"  # version compared with ("" when none: bootstrap)
GATE_PROMOTED = "fct.gate.promoted"  # true | false: did this run move the alias
GATE_PROMOTION = "fct.gate.promotion"  # what happened to the alias, in words

PRODUCTION_ALIAS = "production"
PIPELINE_ALIAS_PREFIX = "pipeline-"  # ``F@pipeline-3``: what params.yaml key 3 last registered


def experiment_name(family: str) -> str:
    """The MLflow experiment holding one run per registered model of the family."""
    return f"fct-{family}"


def lock_model_name(family: str) -> str:
    """A registered model that exists only while a registration holds the family's lock."""
    return f"{family}-registration-lock"


def pipeline_alias(key: str | int) -> str:
    """Alias naming the version a params.yaml key registered (MLflow allows ``[\\w-]``)."""
    return PIPELINE_ALIAS_PREFIX + re.sub(r"[^\w-]", "_", str(key))


def side_info_model_name(family: str) -> str:
    return f"{family}-side-info"


def transformations_model_name(family: str) -> str:
    return f"{family}-transformations"


def model_ref(name: str, version: int | str) -> str:
    """The value stored in link tags such as ``fct.side_info``."""
    return f"{name}/{version}"


def parse_model_ref(value: str) -> tuple[str, int]:
    name, _, version = value.rpartition("/")
    return name, int(version)


def quoted(value: str) -> str:
    """``value`` as a string literal in an MLflow search filter (``name = {quoted(family)}``).

    MLflow's filter parser strips the outer quotes and unescapes nothing, so a name holding
    ``'`` goes between double quotes, which it accepts too; a value with both cannot be written.
    """
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise RegistryError(
        f"{value!r} holds both ' and \"; MLflow's search filters cannot match it: rename it"
    )
