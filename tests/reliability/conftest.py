"""Fixtures for the reliability suite: the upgrade tests' ONNX chains and moto S3 bucket."""

from tests.registry.conftest import tiny_pipeline  # noqa: F401
from tests.support.services import moto_s3, postgres  # noqa: F401
from tests.upgrade.conftest import (  # noqa: F401  (re-exported fixtures)
    chains,
    moto_endpoint,
    registry,
    s3,
    tiny_registry,
)
