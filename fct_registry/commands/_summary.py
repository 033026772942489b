"""How a resumable job ends (``fct embed``, ``fct upgrade``, ``fct backfill run``, ``fct gallery
add-side-info``): its summary as JSON with ``--json``, else one line when a rerun found the job
already complete, else the job's own report."""

from __future__ import annotations

import json
from typing import Any


def print_summary(summary: dict[str, Any], as_json: bool, already_done: str) -> bool:
    """Print ``summary`` as JSON (``as_json``), or ``already_done`` when
    ``summary["already_complete"]``. True when that was the whole report; False when the
    caller prints its own lines for work it did."""
    if as_json:
        print(json.dumps(summary, indent=2))
        return True
    if summary["already_complete"]:
        print(already_done)
        return True
    return False
