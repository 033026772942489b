"""Named points of a job, where the crash-and-resume tests kill it.

Each job module binds ``_reached = reached`` and calls ``_reached("shard:3")`` through its own
module global, so a test replaces one job's hook (``tests/support/kill_at.py``: ``module._reached =
...``) without touching the others; the library itself holds no fault injection. The points the
Parquet jobs share: ``inspected`` (the destination was inspected), ``batch:<shard>:<batch>`` (a
batch written), ``shard:<i>`` (shard published), ``marker:<i>`` (shard marked done),
``manifest`` (manifest written).
"""

from __future__ import annotations

from collections.abc import Callable

Hook = Callable[[str], None]


def reached(point: str) -> None:
    """The job reached ``point``. Does nothing; tests replace it per job module."""


def batch_hook(
    index: int, hook: Hook, rows_done: Callable[[int], object] | None = None
) -> Callable[[int, int], None]:
    """``write_shard``'s ``on_batch`` for shard ``index``: counts the batch's rows with
    ``rows_done`` (a progress bar's ``update``), then reports ``batch:<index>:<i>``."""

    def on_batch(i: int, rows: int) -> None:
        if rows_done is not None:
            rows_done(rows)
        hook(f"batch:{index}:{i}")

    return on_batch
