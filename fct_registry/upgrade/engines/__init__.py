"""Where an upgrade runs: ``local`` (one process) or ``ray`` (Ray Data actors), one interface.

Both engines call the same :func:`~fct_registry.upgrade.upgrade_batch` and give byte-identical
output; see :mod:`.base` for the contract. Importing this package imports neither Ray nor
onnxruntime.
"""

from fct_registry.upgrade.engines import local as _local  # noqa: F401  (registers "local")
from fct_registry.upgrade.engines import ray_data as _ray_data  # noqa: F401  (registers "ray")
from fct_registry.upgrade.engines.base import ENGINES, Engine, create_engine
from fct_registry.upgrade.engines.local import LocalEngine
from fct_registry.upgrade.engines.ray_data import RayEngine, RayUnavailableError
from fct_registry.upgrade.job import upgrade_shard

__all__ = [
    "ENGINES",
    "Engine",
    "LocalEngine",
    "RayEngine",
    "RayUnavailableError",
    "create_engine",
    "upgrade_shard",
]
