"""The partial-backfill evaluation (DVC stage ``backfill``)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from fct_registry.config._base import _Strict
from fct_registry.config.training import OptimConfig, UncertaintyConfig


class UncertaintyTrainingConfig(UncertaintyConfig):
    """The backfill stage's own uncertainty-aware transformation: the loss above, its width and
    optimiser."""

    hidden_dim: int = Field(512, ge=1)
    optim: OptimConfig = OptimConfig(epochs=12, batch_size=512, lr=1e-3, weight_decay=0)


class BackfillConfig(_Strict):
    """The partial-backfill evaluation (DVC stage ``backfill``): train an uncertainty-aware
    transformation ``from -> to`` per seed and measure backfilling curves per order policy."""

    enabled: bool = True
    source: int = Field(1, alias="from")
    target: int = Field(3, alias="to")
    transformation: UncertaintyTrainingConfig = UncertaintyTrainingConfig()
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    steps: int = Field(20, ge=1, description="curve points: fractions 0, 1/steps, ..., 1")
    queries: int | None = Field(
        2000,
        ge=1,
        description="curves: this many test items (a fixed random draw) query a gallery of the "
        "others; null: every test item queries all others (leave-one-out, ~6x the time)",
    )
    policies: list[Literal["random", "uncertainty", "oracle"]] = Field(
        default_factory=lambda: ["random", "uncertainty", "oracle"], min_length=1
    )
    random_orders: int = Field(
        5,
        ge=1,
        description="random permutations per seed whose curves are averaged into the random "
        "policy's curve (its expected curve; one permutation alone is a noisy baseline)",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
