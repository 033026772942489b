"""Partial backfilling (FastFill): re-embed the gallery items a transformation serves worst.

``plan`` orders the candidate rows of an upgraded gallery by a policy (predicted uncertainty,
random, oracle) within a budget; ``run`` re-embeds the planned rows from their images with the
new model and rewrites them in place, atomically and resumably; ``images`` is the one place an
item's image is looked up (from the row's ``source_uri``).
"""

from fct_registry.backfill.images import ItemImages, item_images
from fct_registry.backfill.plan import (
    BackfillPlan,
    BackfillPlanError,
    Budget,
    candidates,
    make_plan,
    source_uris,
    stored_embeddings,
)
from fct_registry.backfill.run import BackfillError, BackfillReport, run_backfill

__all__ = [
    "BackfillError",
    "BackfillPlan",
    "BackfillPlanError",
    "BackfillReport",
    "Budget",
    "ItemImages",
    "candidates",
    "item_images",
    "make_plan",
    "run_backfill",
    "source_uris",
    "stored_embeddings",
]
