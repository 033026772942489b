"""Test-only wrapper: run ``fct ARGS`` and SIGKILL the process when the backfill job reaches
POINT (``batch:<shard>:<batch>``, ``shard:<i>``, ``marker:<i>`` or ``manifest``).

    python -m tests.backfill.kill_at POINT backfill run --plan ... --model ...

The fault is injected by replacing the job's no-op ``_reached`` hook, so library code holds no
kill switch.
"""

from __future__ import annotations

import os
import signal
import sys

from fct_registry.backfill import run
from fct_registry.cli import main


def _kill_at(point: str) -> None:
    def reached(at: str) -> None:
        if at == point:
            os.kill(os.getpid(), signal.SIGKILL)

    run._reached = reached


if __name__ == "__main__":
    _kill_at(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
