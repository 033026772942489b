"""The embedded PostgreSQL with pgvector (the optional ``pgserver`` package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fct_registry.gallery.pg.errors import PgError


def embedded_server(folder: str, *, stop: bool = False) -> str:
    """Start (or find running) the ``pgserver`` PostgreSQL with pgvector in ``folder`` and return
    its URL; it keeps running after this process exits. ``stop``: stop it (fast shutdown)."""
    import logging
    import os
    import subprocess
    import warnings

    try:  # optional dependency, imported only for the embedded server
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR unset: it falls back to /tmp
            import pgserver
            from pgserver._commands import pg_ctl  # no public stop for another process's server
    except ImportError:
        raise PgError(
            "the embedded server needs the pgserver package (pip install pgserver==0.1.4); "
            "or pass the URL of a PostgreSQL server with pgvector"
        ) from None
    logging.getLogger("pgserver").setLevel(logging.CRITICAL)
    data = Path(folder).expanduser().resolve()
    if stop:
        if not (data / "postmaster.pid").is_file():
            raise PgError(f"no embedded server is running in {data}")
        user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs PostgreSQL as it as root
        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=data, user=user, timeout=60)
        return ""
    _remove_dead_pidfile(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XDG_RUNTIME_DIR unset: pgserver falls back to /tmp
        try:
            server = pgserver.get_server(data, cleanup_mode=None)
            with server._lock:  # a handle cached by this process may outlive its server
                server.ensure_postgres_running()
        except subprocess.CalledProcessError as exc:  # initdb or pg_ctl failed
            raise PgError(
                f"the embedded server in {data} did not start ({Path(exc.cmd[0]).name} exited "
                f"with {exc.returncode}); see {data / 'log'}, then rerun (a busy machine can "
                "exceed pg_ctl's 10 s start timeout)"
            ) from None
    return server.get_uri()


def _remove_dead_pidfile(data: Any) -> None:
    """Drop ``postmaster.pid`` when its postmaster is dead: a killed postmaster can stay a
    zombie (where PID 1 does not reap promptly, as in some containers), which both pgserver and
    PostgreSQL take for a running server, so neither would start a new one."""
    import psutil  # pgserver's dependency

    pidfile = data / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid, port, sockets = int(lines[0]), lines[3].strip(), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return
    try:
        dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        dead = True
    if dead:  # its socket's lock file names the dead pid too
        if sockets:
            (Path(sockets) / f".s.PGSQL.{port}.lock").unlink(missing_ok=True)
        pidfile.unlink(missing_ok=True)
