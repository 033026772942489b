"""The progress bar of a job: tqdm, disabled (a no-op with the same methods) unless asked for."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(enabled: bool, **options: Any) -> tqdm:
    """A tqdm bar on stderr when ``enabled``; otherwise one that shows nothing."""
    return tqdm(disable=not enabled, **{"dynamic_ncols": True, **options})
