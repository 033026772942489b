"""Class names travel with a gallery: ``fct upgrade`` (Parquet and pgvector), ``fct gallery copy``
both ways, and a pgvector search compares labels by name as the Parquet search does."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fct_registry.cli import main
from fct_registry.gallery import Gallery, open_storage
from fct_registry.gallery.pg.catalogue import served
from fct_registry.gallery.pg.connection import connect
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.upgrade import UpgradePlan, upgrade_gallery
from fct_registry.upgrade.pgvector import Source, upgrade_to_pg
from tests.gallery.named_galleries import (
    GALLERY_CLASSES,
    naive_topk,
    pair,  # noqa: F401  (module fixture)
    with_classes,
)
from tests.support.pgvector import PgServer, gemm_chain, serve_embedded
from tests.upgrade.conftest import (
    FAMILY,
    NEW_DIM,
    OLD_DIM,
    SIDE,
    SIDE_DIM,
    OnnxChain,
    synthetic_rows,
    write_gallery,
)

FIVE = ("Bag", "Coat", "Dress", "Shirt", "Sneaker")  # synthetic_rows labels are 0..4


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    yield from serve_embedded()


def test_a_parquet_upgrade_keeps_the_class_names(
    tmp_path: Path, chains: dict[str, OnnxChain]
) -> None:
    write_gallery(tmp_path / "src", synthetic_rows(60))
    with_classes(tmp_path / "src", FIVE)
    plan = UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [chains["1-2"].path]})
    upgrade_gallery(Gallery.open(tmp_path / "src"), open_storage(tmp_path / "dst"), plan)
    assert Gallery.open(tmp_path / "dst").manifest.classes == FIVE
    # a gallery that records none still records none (and its manifest bytes gain nothing)
    write_gallery(tmp_path / "bare", synthetic_rows(10))
    upgrade_gallery(Gallery.open(tmp_path / "bare"), open_storage(tmp_path / "up"), plan)
    up = Gallery.open(tmp_path / "up").manifest
    assert up.classes is None and "classes" not in up.provenance["source"]


def _served_classes(url: str) -> tuple[str, ...] | None:
    loc = PgLocation.parse(url)
    with contextlib.closing(connect(loc, autocommit=True)) as conn:
        return served(conn, loc).manifest().classes


@pytest.mark.services
def test_pgvector_upgrade_keeps_the_class_names(pg_server: PgServer, tmp_path: Path) -> None:
    write_gallery(tmp_path / "g", synthetic_rows(50))
    with_classes(tmp_path / "g", FIVE)
    chain = gemm_chain(tmp_path / "1-2.onnx", OLD_DIM, NEW_DIM, SIDE_DIM, seed=1)
    plan = UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [chain.path]}, threads=1)
    url = pg_server.gallery()
    source = Source.open(str(tmp_path / "g"))
    upgrade_to_pg(source, PgLocation.parse(url), plan, batch_size=32)
    assert _served_classes(url) == FIVE


@pytest.mark.services
def test_pgvector_copy_and_search_compare_names(
    pg_server: PgServer,
    pair: dict,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = pg_server.gallery()
    assert main(["gallery", "copy", str(pair["root"] / "g"), url]) == 0
    assert _served_classes(url) == GALLERY_CLASSES
    capsys.readouterr()
    query = ["--query-gallery", str(pair["root"] / "q")]
    argv = ["search", "--gallery", url, *query, "--exact", "-k", "5", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(naive_topk(pair))
    # and back to Parquet, still named
    assert main(["gallery", "copy", url, str(tmp_path / "back")]) == 0
    assert Gallery.open(tmp_path / "back").manifest.classes == GALLERY_CLASSES
