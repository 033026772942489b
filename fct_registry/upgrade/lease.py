"""The upgrade's lease on its ``--out``: ``_fct_upgrade.lease``, held by
:mod:`fct_registry.upgrade.job` and the Ray engine for the whole run. The mechanism (O_EXCL file
or S3 conditional put, takeover of a dead holder) is :mod:`fct_registry.jobs.lease`, shared
with ``fct embed`` and ``fct backfill run``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fct_registry.jobs.lease import lease
from fct_registry.storage import Storage

LEASE = "_fct_upgrade.lease"


@contextlib.contextmanager
def upgrade_lease(dest: Storage) -> Iterator[dict[str, Any]]:
    """Hold the upgrade lease of ``dest`` for the block; yields the holder record."""
    with lease(dest, LEASE, "upgrade") as holder:
        yield holder
