"""The image-source tests use the upgrade tests' S3 fixtures (moto_server on loopback)."""

from tests.upgrade.conftest import moto_endpoint, moto_s3, s3  # noqa: F401  (pytest fixtures)
