"""The gallery tests share the upgrade tests' fixtures (S3 on moto_server, synthetic galleries)."""

from tests.upgrade.conftest import moto_endpoint, moto_s3, s3  # noqa: F401  (pytest fixtures)
