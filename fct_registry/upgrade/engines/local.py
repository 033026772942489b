"""``local``: the single-process streaming job (:func:`fct_registry.upgrade.upgrade_gallery`)."""

from __future__ import annotations

from fct_registry.upgrade.engines.base import ENGINES, Engine
from fct_registry.upgrade.job import run_upgrade


class LocalEngine(Engine):
    """One process, shard after shard; decoding and the chain overlap with writing."""

    name = "local"

    # The lease is the base class's; the job itself is the local one, as it is.
    _run = staticmethod(run_upgrade)


@ENGINES.register("local")
def build_local() -> Engine:
    return LocalEngine()
