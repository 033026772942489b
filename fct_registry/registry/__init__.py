"""MLflow integration: the ``fct`` flavor, ONNX export, artifact checksums and registration.

Tag keys and registry naming live in :mod:`fct_registry.registry.tags`; the one version-reference
format in :mod:`fct_registry.registry.refs`. Importing this package is cheap: torch, onnxruntime
and mlflow are imported inside the functions that need them.
"""

from fct_registry.registry.checksums import (
    ChecksumError,
    content_hash,
    file_checksums,
    sha256_file,
    verify_checksums,
)
from fct_registry.registry.flavor import (
    FLAVOR_NAME,
    FlavorError,
    load_model,
    log_model,
    save_model,
)
from fct_registry.registry.onnx_export import OnnxExportError, export_onnx, verify_onnx
from fct_registry.registry.register import (
    RegisteredVersion,
    RegistrationSummary,
    RegistryError,
    RegistryLockError,
    find_version,
    redact_uri,
    register_pipeline,
    registration_lock,
)

__all__ = [
    "FLAVOR_NAME",
    "ChecksumError",
    "FlavorError",
    "OnnxExportError",
    "RegisteredVersion",
    "RegistrationSummary",
    "RegistryError",
    "RegistryLockError",
    "content_hash",
    "export_onnx",
    "file_checksums",
    "find_version",
    "load_model",
    "log_model",
    "redact_uri",
    "register_pipeline",
    "registration_lock",
    "save_model",
    "sha256_file",
    "verify_checksums",
    "verify_onnx",
]
