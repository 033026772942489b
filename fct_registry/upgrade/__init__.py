"""Upgrading stored galleries through resolved FCT chains, without re-embedding any image.

``runner`` runs a chain's ONNX graphs; ``batch`` is the engine-independent step (an Arrow batch
in, the upgraded batch out); ``plan`` resolves and fetches one chain per (version, side-info
extractor) found in the gallery and estimates the cost; ``job`` streams the gallery shard by
shard, atomically and resumably, recording provenance. Importing this package does not import
torch or mlflow.
"""

from fct_registry.upgrade.batch import BatchPlan, GroupRunner, output_schema, upgrade_batch
from fct_registry.upgrade.job import (
    DEFAULT_BATCH_SIZE,
    DestinationError,
    UpgradeIncompleteError,
    UpgradeReport,
    upgrade_gallery,
)
from fct_registry.upgrade.plan import (
    Estimate,
    GroupPlan,
    PlanError,
    Step,
    UpgradePlan,
    estimate,
    plan_from_registry,
)
from fct_registry.upgrade.runner import ChainRunner, OnnxChainRunner, RunnerError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchPlan",
    "ChainRunner",
    "DestinationError",
    "Estimate",
    "GroupPlan",
    "GroupRunner",
    "OnnxChainRunner",
    "PlanError",
    "RunnerError",
    "Step",
    "UpgradeIncompleteError",
    "UpgradePlan",
    "UpgradeReport",
    "estimate",
    "output_schema",
    "plan_from_registry",
    "upgrade_batch",
    "upgrade_gallery",
]
