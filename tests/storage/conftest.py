"""The storage tests share the upgrade tests' S3 fixtures (a bucket on moto_server)."""

from tests.upgrade.conftest import moto_endpoint, moto_s3, s3  # noqa: F401  (pytest fixtures)
