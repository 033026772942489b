"""How long a job ran: wall-clock and CPU seconds of this process, for its report."""

from __future__ import annotations

import time


class Stopwatch:
    """Started when made; :meth:`read` gives ``(wall seconds, CPU seconds)`` since then."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu
