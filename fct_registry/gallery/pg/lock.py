"""PostgreSQL advisory locks: the metadata tables' creation lock, and one job per gallery.

Every writer of a gallery (copy, upgrade, prune) takes the same session-level lock through
:func:`lock_gallery`, so a second job fails naming the holder instead of interleaving."""

from __future__ import annotations

import time
from typing import Any

from fct_registry.gallery.pg.errors import GalleryBusyError
from fct_registry.gallery.pg.location import PgLocation

META_LOCK = 0x46435447  # advisory key serialising creation of the metadata tables ("FCTG")


def lock_metadata(cur: Any) -> None:
    """Hold :data:`META_LOCK` until the transaction ends (concurrent first uses of a database
    would otherwise race to create the same tables)."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (META_LOCK,))


def lock_key(loc: PgLocation) -> str:
    return f"fct-gallery:{loc.gallery}"


def lock_gallery(
    conn: Any,
    loc: PgLocation,
    *,
    wait: float = 0.0,
    then: str = "wait for it to finish (rerun this command then), or stop that job",
) -> None:
    """Take the gallery's session-level advisory lock (held until the connection closes), or
    raise :class:`GalleryBusyError` naming its holder after ``wait`` seconds; ``then`` is the
    fix the message gives. Commits (or, when refused, rolls back) the open transaction."""
    deadline = time.monotonic() + wait
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock_key(loc),))
            if cur.fetchone()[0]:
                conn.commit()
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        cur.execute(
            """SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l
               JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'advisory' AND l.granted
                 AND l.objid::int = hashtext(%s) LIMIT 1""",
            (lock_key(loc),),
        )
        holder = cur.fetchone()
    conn.rollback()
    who = (
        f"server pid {holder[0]} ({holder[1] or 'unnamed client'}, connected "
        f"{holder[2]:%Y-%m-%d %H:%M:%S %Z})"
        if holder
        else "another session"
    )
    raise GalleryBusyError(
        f"another job is writing gallery {loc.gallery!r} at {loc.server}: {who} holds its "
        f"lock; {then}"
    )
