"""Test-only wrapper: run ``fct ARGS`` and SIGKILL the process when the job in MODULE reaches
POINT (``batch:<shard>:<batch>``, ``shard:<i>``, ``marker:<i>``, ``manifest``, ...).

    python -m tests.support.kill_at fct_registry.upgrade.job POINT upgrade --gallery ... --to ...
    --out ...

The fault is injected by replacing the job module's no-op ``_reached`` hook (the upgrade, embed
and backfill jobs each have one), so library code holds no kill switch.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

from fct_registry.cli import main


def _kill_at(module: str, point: str) -> None:
    def reached(at: str) -> None:
        if at == point:
            os.kill(os.getpid(), signal.SIGKILL)

    importlib.import_module(module)._reached = reached


if __name__ == "__main__":
    _kill_at(sys.argv[1], sys.argv[2])
    sys.exit(main(sys.argv[3:]))
