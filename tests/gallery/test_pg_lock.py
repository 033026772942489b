"""One advisory lock per gallery (``gallery.pg.lock``): every writer takes it the same way, so a
second job fails naming the server process that holds it, whichever job it is."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

from fct_registry.gallery.pg.connection import connect
from fct_registry.gallery.pg.errors import GalleryBusyError
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.gallery.pg.lock import lock_gallery
from fct_registry.gallery.pg.tables import prune
from tests.support.pgvector import PgServer, load_rows, serve_embedded

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    yield from serve_embedded()


def test_a_held_gallery_refuses_a_copy_and_a_prune_naming_the_holder(pg_server) -> None:
    url = pg_server.gallery()
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((4, 8), dtype=np.float32)
    load_rows(url, [f"r{i}" for i in range(4)], emb, None)
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc)) as holder:
        lock_gallery(holder, loc)  # what a running upgrade holds
        with holder.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        with pytest.raises(GalleryBusyError, match=f"server pid {pid} .* holds its lock"):
            load_rows(url, [f"s{i}" for i in range(4)], emb, None)
        with pytest.raises(GalleryBusyError, match=f"server pid {pid} .* holds its lock"):
            prune(loc)
    load_rows(url, [f"s{i}" for i in range(4)], emb, None)  # released with its session
    assert len(prune(loc)) == 1
