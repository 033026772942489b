"""``fct embed``, ``fct upgrade`` and ``fct search`` with ``postgresql://`` locations, end to end
against a real MLflow registry (the README's commands on the tiny family)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fct_registry.cli import main
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from tests.support.pgvector import PgServer, matrix, read_all, serve_embedded
from tests.upgrade.conftest import TinyRegistry

pytestmark = [pytest.mark.slow, pytest.mark.services]  # builds the tiny registry (~30 s)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    yield from serve_embedded()


def _embed(reg: TinyRegistry, version: int, out: str) -> list[str]:
    return ["embed", "--model", f"tiny@{version}", "--images", str(reg.images), "--out", out,
            "--device", "cpu", "--tracking-uri", reg.uri]  # fmt: skip


def _upgrade(reg: TinyRegistry, src: str, out: str, to: str = "tiny@2") -> list[str]:
    return ["upgrade", "--gallery", src, "--to", to, "--out", out, "--batch-size", "16",
            "--tracking-uri", reg.uri, "--no-progress"]  # fmt: skip


def test_embed_upgrade_and_search_through_postgresql(
    registry: TinyRegistry, pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_server.gallery("tiny_images")
    assert main(_embed(registry, 1, url)) == 0
    assert "tiny_images" in capsys.readouterr().out
    embedded = read_all(url)
    assert set(embedded[gallery_schema.MODEL_VERSION].to_pylist()) == {1}
    # each row names its image: the images file and the row within it
    images = str(registry.images.resolve())
    assert all(uri.startswith(f"{images}#") for uri in embedded["source_uri"].to_pylist())
    assert main(_embed(registry, 1, str(tmp_path / "v1"))) == 0
    assert main(_embed(registry, 2, str(tmp_path / "v2"))) == 0

    assert main(_upgrade(registry, url, url)) == 0  # in place: new table, view swapped
    assert "now serves it" in capsys.readouterr().out
    assert main(_upgrade(registry, str(tmp_path / "v1"), str(tmp_path / "v1-up"))) == 0
    parquet = pa.Table.from_batches(list(Gallery.open(tmp_path / "v1-up").batches()))
    served = read_all(url)
    parquet = parquet.sort_by(gallery_schema.ID)
    assert served[gallery_schema.ID].to_pylist() == parquet[gallery_schema.ID].to_pylist()
    assert np.array_equal(
        matrix(served, gallery_schema.EMBEDDING), matrix(parquet, gallery_schema.EMBEDDING)
    )

    capsys.readouterr()
    assert main(_upgrade(registry, url, url)) == 0
    assert "nothing to do" in capsys.readouterr().out

    search = ["search", "--gallery", url, "--query-gallery", str(tmp_path / "v2"),
              "--exclude-self", "--recall-queries", "50"]  # fmt: skip
    assert main(search) == 0
    out = capsys.readouterr().out
    assert "queries/s" in out and "recall@10 of HNSW against exact search" in out

    assert main(_upgrade(registry, url, url, to="tiny@1")) == 2
    err = capsys.readouterr().err
    assert "newer than the target tiny@1" in err and "fct gallery rollback" in err
    assert main(["gallery", "rollback", url]) == 0  # what that message suggests
    assert set(read_all(url)[gallery_schema.MODEL_VERSION].to_pylist()) == {1}


def test_upgrade_rollback_upgrade_prune_through_the_cli(
    registry: TinyRegistry, pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `fct gallery rollback`, `fct upgrade` serves the target again (it used to print
    "already serves" while the view served the old version, and `fct search` then asked for that
    same upgrade)."""
    url = pg_server.gallery("tiny_cycle")
    assert main(_embed(registry, 1, url)) == 0
    assert main(_embed(registry, 2, str(tmp_path / "v2"))) == 0
    assert main(_upgrade(registry, url, url)) == 0
    upgraded = read_all(url)
    assert main(["gallery", "rollback", url]) == 0
    assert set(read_all(url)[gallery_schema.MODEL_VERSION].to_pylist()) == {1}
    capsys.readouterr()

    assert main(_upgrade(registry, url, url)) == 0
    assert "serves tiny@2 again" in capsys.readouterr().out
    assert read_all(url).equals(upgraded)
    search = ["search", "--gallery", url, "--query-gallery", str(tmp_path / "v2"),
              "--exclude-self", "--recall-queries", "0"]  # fmt: skip
    assert main(search) == 0  # the served version matches the queries': no upgrade asked for
    assert main(["gallery", "prune", url]) == 0
    capsys.readouterr()
    assert main(_upgrade(registry, url, url)) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert read_all(url).equals(upgraded)
