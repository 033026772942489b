"""Test-only wrapper: run ``fct ARGS`` and SIGKILL the process when the embed job reaches
POINT (``batch:<shard>:<batch>``, ``shard:<i>``, ``marker:<i>`` or ``manifest``).

    python -m tests.gallery.kill_at POINT embed --images DIR --model ... --out ...

The fault is injected by replacing the job's no-op ``_checkpoint`` hook, so library code holds
no kill switch.
"""

from __future__ import annotations

import os
import signal
import sys

from fct_registry.cli import main
from fct_registry.gallery import embed_job


def _kill_at(point: str) -> None:
    def reached(at: str) -> None:
        if at == point:
            os.kill(os.getpid(), signal.SIGKILL)

    embed_job._checkpoint = reached


if __name__ == "__main__":
    _kill_at(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
