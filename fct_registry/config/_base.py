"""The strict base model every section derives from, and key checks shared by sections."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_addressable(entries: dict[str, Any]) -> None:
    """Refuse keys that ``dvc exp run -S section.KEY.x=1`` cannot address: DVC parses KEY with
    Hydra's grammar, which rejects '-', '.' and a leading digit."""
    bad = [key for key in entries if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key)]
    if bad:
        raise ValueError(
            f"names {bad} cannot be addressed by `dvc exp run -S`; use letters, digits "
            "and '_', starting with a letter (e.g. `v1_to_v2`)"
        )
