"""Is the holder of a lease or lock still running? Asked of this host's processes only: a
process on another host is never guessed dead from here."""

from __future__ import annotations

import os
import socket
from typing import Any


def pid_alive(pid: int) -> bool:
    """A process ``pid`` runs on this host (maybe another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder_gone(holder: dict[str, Any] | None) -> bool:
    """``holder`` (a record with ``host`` and ``pid``) ran on this host and its process is gone."""
    if not holder or holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and pid > 0 and not pid_alive(pid)
