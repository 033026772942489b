"""Where a backfill finds an item's image: the one lookup every backfill goes through.

For now items are rows of a prepared safetensors split (``images`` uint8 ``[N, C, H, W]``), the
file ``fct embed --images`` indexed, and a row's id ends in its row number, as the safetensors
image source names it (``test-0000042`` is row 42 of ``test.safetensors``). Galleries embedded from
folders, manifests or tar shards record each row's ``source_uri``; reading those through
:func:`fct_registry.data.image_sources.open_source` here would change no caller.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from fct_registry.errors import DataError

_ROW = re.compile(r"(\d+)$")


def item_images(ids: Sequence[str], source: str | Path) -> torch.Tensor:
    """uint8 images ``[len(ids), C, H, W]`` of the items ``ids``, in that order."""
    from safetensors import safe_open

    path = Path(source)
    if not path.is_file():
        raise DataError(
            f"image source {path} not found; pass the safetensors file the gallery was indexed "
            "from (`fct backfill plan --images FILE`, e.g. outputs/data/test.safetensors)"
        )
    rows = []
    for item in ids:
        m = _ROW.search(item)
        if m is None:
            raise DataError(
                f"item id {item!r} does not end in a row number of {path.name}; galleries "
                "indexed with `fct embed --images FILE` name rows <prefix><row>"
            )
        rows.append(int(m.group(1)))
    with safe_open(str(path), framework="pt") as fh:
        if "images" not in set(fh.keys()):
            raise DataError(f"{path} has no 'images' tensor; store uint8 [N, C, H, W] images")
        images = fh.get_slice("images")
        n = images.get_shape()[0]
        bad = [r for r in rows if r >= n]
        if bad:
            raise DataError(
                f"item row {bad[0]} is beyond the {n} images of {path}; the gallery was "
                "indexed from another file: pass that one"
            )
        if not rows:
            shape = images.get_shape()[1:]
            return torch.empty((0, *shape), dtype=torch.uint8)
        lo, hi = min(rows), max(rows) + 1
        block = images[lo:hi]  # one contiguous read, then a gather
    return block[torch.tensor(rows) - lo].contiguous()
