"""Connections to a gallery store: psycopg2 errors become :class:`PgError` naming the fix,
without secrets, and the pgvector extension is created on first use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fct_registry.gallery.pg.errors import (
    PgAuthError,
    PgError,
    PgUnreachableError,
    PgvectorMissingError,
)
from fct_registry.gallery.pg.location import PgLocation


def _scrub(text: str, loc: PgLocation) -> str:
    """A driver message with any secret of ``loc`` removed (libpq may echo parts of the DSN)."""
    password = urlsplit(loc.dsn).password
    secrets = [password] if password else []
    secrets += [v for k, v in parse_qsl(urlsplit(loc.dsn).query, True) if k == "password"]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text.strip().replace("\n", " ")


def connect(loc: PgLocation, *, autocommit: bool = False, check_vector: bool = True) -> Any:
    """A psycopg2 connection to ``loc``'s database; errors say what to fix, without secrets.

    ``client_connection_check_interval`` makes the server notice a client killed mid-statement
    (kill -9 during an index build) and release its locks within a second, so a rerun can resume.
    """
    import psycopg2

    try:
        conn = psycopg2.connect(loc.dsn, connect_timeout=10, application_name="fct")
    except psycopg2.OperationalError as exc:
        raise _connect_error(exc, loc) from None
    except psycopg2.ProgrammingError as exc:  # a malformed URL
        raise PgError(
            f"{loc.uri} is not a usable PostgreSQL URL ({_scrub(str(exc), loc)})"
        ) from None
    conn.autocommit = True
    with conn.cursor() as cur:
        if conn.server_version >= 140000:
            cur.execute("SET client_connection_check_interval = '250ms'")
    if check_vector:
        ensure_vector(conn, loc)
    conn.autocommit = autocommit
    return conn


def _connect_error(exc: Exception, loc: PgLocation) -> PgError:
    text = _scrub(str(exc), loc)
    low = text.lower()
    if "password" in low or "authentication" in low or ("role" in low and "not exist" in low):
        return PgAuthError(
            f"PostgreSQL at {loc.server} refused the credentials ({text}); fix the user or "
            "password in the URL (the password is never shown), or grant the role access"
        )
    if "database" in low and "does not exist" in low:
        return PgError(
            f"{text} at {loc.server}; create it (createdb, or CREATE DATABASE) or fix the URL"
        )
    return PgUnreachableError(
        f"cannot reach PostgreSQL at {loc.server} ({text}); start the server (embedded: "
        "`fct gallery server DIR`) or fix the host, port or socket in the URL"
    )


@contextlib.contextmanager
def driver_errors(loc: PgLocation, what: str) -> Iterator[None]:
    """Turn psycopg2's errors into :class:`PgError` naming ``what`` failed and the fix, with
    secrets scrubbed: a lost server (killed, restarted) says that rerunning resumes."""
    import psycopg2

    try:
        yield
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        raise PgUnreachableError(
            f"lost the connection to PostgreSQL at {loc.server} while {what} "
            f"({_scrub(str(exc), loc) or type(exc).__name__}); work committed so far is kept: "
            "rerun the same command once the server is back"
        ) from None
    except psycopg2.Error as exc:
        raise PgError(
            f"PostgreSQL at {loc.server} failed while {what}: "
            f"{_scrub(exc.pgerror or str(exc), loc)}"
        ) from None


def ensure_vector(conn: Any, loc: PgLocation) -> str:
    """pgvector's version; creates the extension in the database when it is available."""
    import psycopg2

    with conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cur.fetchone()
        if row:
            return str(row[0])
        try:
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg2.Error as exc:
            conn.rollback() if not conn.autocommit else None
            server = conn.server_version
            major = server // 10000
            if exc.pgcode == "42501":  # insufficient privilege
                raise PgvectorMissingError(
                    f"{loc.server}: pgvector is installed on the server but not in this "
                    "database, and this role may not create it; ask an administrator to run "
                    "CREATE EXTENSION vector in it"
                ) from None
            raise PgvectorMissingError(
                f"the PostgreSQL {major} server at {loc.server} has no pgvector extension "
                f"({_scrub(exc.pgerror or str(exc), loc)}); install it on the server (Debian: "
                f"apt install postgresql-{major}-pgvector) or use the embedded server with "
                "pgvector (`fct gallery server DIR`)"
            ) from None
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        return str(cur.fetchone()[0])
