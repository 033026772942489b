"""The engine contract: how an upgrade's shards get executed, behind one ``run`` signature.

Every engine runs the same engine-independent step, :func:`fct_registry.upgrade.upgrade_batch`
(a pyarrow batch in, the upgraded batch out), and must produce the local job's output: same
shards, same bytes, same manifest (only ``provenance.engine`` names the engine). Engines differ
in *where* shards are processed (one process, Ray actors; Dask or Spark would wrap the same
per-shard step). Engines are registered by name and built with :func:`create_engine`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from fct_registry._registry import Registry
from fct_registry.upgrade.job import UpgradeJob
from fct_registry.upgrade.lease import upgrade_lease

if TYPE_CHECKING:
    from fct_registry.gallery.reader import Gallery
    from fct_registry.storage import Storage
    from fct_registry.upgrade.job import UpgradeReport
    from fct_registry.upgrade.plan import UpgradePlan


class Engine(ABC):
    """Upgrades ``source`` into ``dest`` with ``plan``; same guarantees as the local job
    (atomic shards, resumable, byte-identical output, the same errors)."""

    name: str

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
        """The job under the destination's lease (:mod:`fct_registry.upgrade.lease`): a second
        run into the same ``dest`` fails at once, whichever engine either runs on."""
        with upgrade_lease(dest):
            return self._run(UpgradeJob(source, dest, plan, batch_size, progress, keep_going))

    @abstractmethod
    def _run(self, job: UpgradeJob) -> UpgradeReport:
        """The job proper; the caller holds the destination's lease."""


ENGINES: Registry[Engine] = Registry("upgrade engine")
"""Named engine builders; ``ENGINES.build(name, **options)`` fails on a typo with the known
names."""


def create_engine(name: str, **options: object) -> Engine:
    """The engine registered as ``name``, built with ``options`` (e.g. ``address=`` for Ray)."""
    return ENGINES.build(name, **options)
