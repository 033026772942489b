"""``postgresql://`` gallery URLs: parsing, the gallery name, and redaction of the password."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fct_registry.gallery.pg.errors import PgError

SCHEMES = ("postgresql://", "postgres://")


_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


def is_pg_url(text: object) -> bool:
    return isinstance(text, str) and text.startswith(SCHEMES)


def redact(url: str) -> str:
    """``url`` with the password (user-info or ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if password else f"{user}@{host}"
    query = urlencode(
        [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, True)],
        safe="/",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class PgLocation:
    """A gallery in a PostgreSQL database. ``dsn`` holds the credentials: never print it."""

    dsn: str = field(repr=False)
    gallery: str
    uri: str  # redacted, with the gallery: what messages show

    @classmethod
    def parse(cls, url: str) -> PgLocation:
        if not is_pg_url(url):
            raise PgError(f"{url!r} is not a postgresql:// URL")
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True)
        names = [v for k, v in params if k == "gallery"]
        rest = [(k, v) for k, v in params if k != "gallery"]
        shown = redact(url)
        if len(names) != 1 or not _NAME.match(names[0]):
            raise PgError(
                f"{shown}: name the gallery with one gallery=NAME parameter (lower-case "
                "letters, digits and _, at most 40, not starting with a digit), e.g. "
                "postgresql://user@host/db?gallery=fashion"
            )
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest, safe="/"), ""))
        return cls(dsn, names[0], shown)

    def with_gallery(self, name: str) -> PgLocation:
        parts = urlsplit(self.uri)
        query = [(k, v) for k, v in parse_qsl(parts.query, True) if k != "gallery"]
        query.append(("gallery", name))
        shown = urlunsplit(parts._replace(query=urlencode(query, safe="/")))
        return PgLocation(self.dsn, name, shown)

    @property
    def server(self) -> str:
        """The redacted URL without the gallery (the database)."""
        parts = urlsplit(self.uri)
        query = [(k, v) for k, v in parse_qsl(parts.query, True) if k != "gallery"]
        return urlunsplit(parts._replace(query=urlencode(query, safe="/")))
