"""``local``: the single-process streaming job (:func:`fct_registry.upgrade.upgrade_gallery`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fct_registry.upgrade.engines.base import ENGINES, Engine
from fct_registry.upgrade.job import upgrade_gallery

if TYPE_CHECKING:
    from fct_registry.gallery.reader import Gallery
    from fct_registry.storage import Storage
    from fct_registry.upgrade.job import UpgradeReport
    from fct_registry.upgrade.plan import UpgradePlan


class LocalEngine(Engine):
    """One process, shard after shard; decoding and the chain overlap with writing."""

    name = "local"

    def run(
        self,
        source: Gallery,
        dest: Storage,
        plan: UpgradePlan,
        *,
        batch_size: int,
        progress: bool = False,
        keep_going: bool = False,
    ) -> UpgradeReport:

        return upgrade_gallery(
            source, dest, plan, batch_size=batch_size, progress=progress, keep_going=keep_going
        )


@ENGINES.register("local")
def build_local() -> Engine:
    return LocalEngine()
