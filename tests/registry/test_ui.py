"""The MLflow UI tells the story: a registered version's page shows its links (headless
Chromium renders the page; the single-page app needs a browser, not just HTTP)."""

from __future__ import annotations

import pytest

from tests.registry.conftest import FAMILY
from tests.support.browser import chromium
from tests.support.services import start_ui, stop

pytestmark = [pytest.mark.ui, pytest.mark.slow]
SIDE_INFO = f"{FAMILY}-side-info"
TRANSFORMATIONS = f"{FAMILY}-transformations"


def _dom(url: str) -> str:
    out = chromium("--dump-dom", url, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def ui(registered, tmp_path_factory):
    """`make ui` on the registered SQLite store."""
    proc, url = start_ui(registered.uri, tmp_path_factory.mktemp("ui") / "ui.log")
    yield url
    stop(proc)


def test_embedding_version_page_links_side_info_and_transformations(ui, registered):
    dom = _dom(f"{ui}/#/models/{FAMILY}/versions/2")
    into = registered.summary.transformations["v1_to_v2"].version
    out_of = registered.summary.transformations["v2_to_v3"].version
    for text in (
        f"{SIDE_INFO}/1",
        f"{TRANSFORMATIONS}/{into}",
        f"{TRANSFORMATIONS}/{out_of}",
        f"{FAMILY}@2",
        "pipeline-2",
        "fct.side_info",
        "Compatibility",
    ):
        assert text in dom, text
    assert f'href="#/models/{SIDE_INFO}/versions/1"' in dom


def test_transformation_version_page_links_its_ends(ui, registered):
    version = registered.summary.transformations["v2_to_v3"].version
    dom = _dom(f"{ui}/#/models/{TRANSFORMATIONS}/versions/{version}")
    for text in (f"{FAMILY}/2", f"{FAMILY}/3", f"{SIDE_INFO}/1", "fct.from", "pipeline-v2_to_v3"):
        assert text in dom, text
