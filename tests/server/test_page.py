"""The compatibility page: built from the registry (fast checks on the data), served by
``mlflow server --app-name fct`` on loopback and rendered in headless Chromium beside the MLflow
version page it links from."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.gate.conftest import gate_result
from tests.registry.conftest import FAMILY
from tests.server.apps import app_env
from tests.support.browser import chromium
from tests.support.services import http_ok, start_ui, stop

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[2] / "docs"
AS_STORED = {"top1": 4.6, "top5": 21.5, "mAP": 9.75}  # fashion@3 queries, fashion@1 gallery


@pytest.fixture(scope="module")
def store(registered, tmp_path_factory) -> str:
    """A copy of the registered store with the chain 1->2->3 recorded and version 3 in
    production, so the page has every kind of thing to show."""
    from mlflow import MlflowClient

    from fct_registry.gate.promote import record_and_promote
    from fct_registry.registry.register import record_measured_chains

    folder = tmp_path_factory.mktemp("page-store")
    shutil.copyfile(registered.uri.removeprefix("sqlite:///"), folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    record_measured_chains(registered.summary, registered.pipeline.layout, uri)
    client = MlflowClient(uri, registry_uri=uri)
    # What `fct gate --promote` records: a failed candidate, then a passing one promoted.
    client.set_registered_model_alias(FAMILY, "production", "1")
    for version, top1 in ((2, 55.0), (3, 75.5)):
        result = gate_result(version, 1, top1)
        if version == 3:  # the gate measured the old gallery as stored too (same widths)
            result.scores["raw"] = dict(AS_STORED)
        record_and_promote(result, promote=True, tracking_uri=uri)
    assert int(client.get_registered_model(FAMILY).aliases["production"]) == 3
    return uri


@pytest.fixture(scope="module")
def legacy_store(registered, tmp_path_factory) -> str:
    """A store whose verdicts were recorded before the gate kept a history: tags only."""
    from mlflow import MlflowClient

    from fct_registry.registry.pages import refresh_descriptions

    folder = tmp_path_factory.mktemp("legacy-store")
    shutil.copyfile(registered.uri.removeprefix("sqlite:///"), folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    for version, verdict in ((2, "fail"), (3, "pass")):
        checks = {"top1_drop": {"status": verdict}, "upgraded_gap": {"status": "pass"}}
        report = {"verdict": verdict, "baseline": 1, "checks": checks, "at": f"2026-11-2{version}"}
        client.set_model_version_tag(FAMILY, str(version), "fct.gate.verdict", verdict)
        client.set_model_version_tag(FAMILY, str(version), "fct.gate.report", json.dumps(report))
    client.set_registered_model_alias(FAMILY, "production", "3")
    refresh_descriptions(client, FAMILY)
    return uri


def test_the_view_holds_every_measured_pair_and_links(store, registered):
    from mlflow import MlflowClient

    from fct_registry.server.page import family_view, render_family

    client = MlflowClient(store, registry_uri=store)
    view = family_view(client, FAMILY)
    assert view.versions == [1, 2, 3] and view.production == 3
    t = registered.summary.transformations
    # Diagonal: own gallery; (2, 1): the better of the two 1->2 transformations; (3, 1): chain.
    assert {(q, g) for q, g in view.cells} == {(1, 1), (2, 2), (3, 3), (2, 1), (3, 2), (3, 1)}
    best_12 = max(
        (t["v1_to_v2"], t["v1_to_v2_no_side_info"]), key=lambda r: _top1(client, r.version)
    )
    assert view.cells[(2, 1)].model_version == best_12.version
    assert view.cells[(3, 1)].how.startswith("chain")
    for q, g in view.cells:  # every cell equals the tag it was read from
        cell = view.cells[(q, g)]
        want = (
            client.get_model_version(FAMILY, str(q)).tags["fct.top1"]
            if q == g
            else client.get_model_version(
                f"{FAMILY}-transformations", str(cell.model_version)
            ).tags["fct.top1"]
        )
        assert cell.top1 == pytest.approx(float(want))
    page = render_family(view)
    assert (
        f'href="../../#/models/{FAMILY}-transformations/versions/{t["v2_to_v3"].version}"' in page
    )
    assert "production" in page and "<svg" in page
    v3 = client.get_model_version(FAMILY, "3").description
    assert "@production (serving)" in v3 and "PASS against @1: 2 rules passed, 0 failed" in v3
    assert f'<a href="fct/family/{FAMILY}#gate-history">every recorded verdict' in v3
    assert json.loads(json.dumps(view.as_dict()))["production"] == 3


def test_the_page_shows_top5_gap_closed_and_the_number_without_transformation(store):
    """Beside each edge's top-1: top-5, mAP, the gap it closes (the registry's own
    ``fct.gap_closed_top1``) and new queries on the old gallery as stored (the gate's raw case)."""
    from mlflow import MlflowClient

    from fct_registry.server.page import edges_html, family_view, heatmap_html

    client = MlflowClient(store, registry_uri=store)
    view = family_view(client, FAMILY)
    assert view.as_stored == {(3, 1): {**AS_STORED, "run_id": view.gates[0]["run_id"]}}
    table = edges_html(view)
    rows = table.split("<tr>")[2:]
    assert len(rows) == len(view.graph.edges) + len(view.graph.chains)
    for e, row in zip([*view.graph.edges, *view.graph.chains], rows, strict=True):
        tags = client.get_model_version(f"{FAMILY}-transformations", str(e.model_version)).tags
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[4] == f"<b>{e.top1:.1f}</b>" and cells[5] == f"{e.top5:.1f}"
        gap = view.gap_closed(e)
        old, new = (_own(client, v) for v in (e.source, e.target))
        if abs(new - old) < 0.5:  # no gap to close (the evaluation's MIN_GAP): not shown
            assert gap is None and cells[7] == "—"
        else:
            assert gap == pytest.approx(100 * (e.top1 - old) / (new - old))  # by hand
            assert cells[7] == f"{gap:.0f}%"
        if "fct.gap_closed_top1" in tags:  # registered with the evaluation's own number
            assert gap == pytest.approx(float(tags["fct.gap_closed_top1"]), abs=1e-3)
        assert cells[8] == ("4.6" if (e.source, e.target) == (1, 3) else "—")
    assert "as stored 4.6" in heatmap_html(view)
    data = json.loads(json.dumps(view.as_dict()))
    assert data["as_stored"] == [{"query": 3, "gallery": 1, **view.as_stored[(3, 1)]}]
    assert all("gap_closed_top1" in e and "top5" in e for e in data["edges"] + data["chains"])


def test_the_page_shows_the_gate_history_newest_first_with_links_to_runs(store):
    from mlflow import MlflowClient

    from fct_registry.gate.promote import record_and_promote
    from fct_registry.server.page import family_view, render_family

    client = MlflowClient(store, registry_uri=store)
    view = family_view(client, FAMILY)
    assert not view.legacy_gates
    summary = [
        (g["version"], g["verdict"], g["passed"], g["failed"], g["promoted"]) for g in view.gates
    ]
    assert summary == [(3, "pass", 2, 0, True), (2, "fail", 1, 1, False)]
    page = render_family(view)
    history = page[page.index('id="gate-history"') :]
    runs = [g["run_id"] for g in view.gates]
    links = [f"#/experiments/{g['experiment_id']}/runs/{g['run_id']}" for g in view.gates]
    assert all(link in history for link in links)
    assert history.index(links[0]) < history.index(links[1])  # newest first
    assert "fashion@production moved from version 1 to version 3" in history
    assert "✗ upgraded_top1_vs_baseline 55.00 ≥ 70.00" in history
    assert "– raw_top1 (skipped)" in history
    assert f"#/experiments/{view.experiment_id}'" in history  # the experiment, for older runs
    # A version gated again is a new row (the version's tags keep only the latest verdict).
    copy = json.loads(json.dumps(view.as_dict()))
    assert [g["run_id"] for g in copy["gates"]] == runs
    record_and_promote(gate_result(3, 1, 75.5), promote=False, tracking_uri=store)
    again = family_view(client, FAMILY)
    assert [g["run_id"] for g in again.gates][1:] == runs
    assert again.gates[0]["version"] == 3 and not again.gates[0]["promoted"]
    assert client.get_model_version(FAMILY, "3").tags["fct.gate.run"] == again.gates[0]["run_id"]
    # Bounded: the page reads only the newest entries.
    assert [g["run_id"] for g in family_view(client, FAMILY, history_limit=2).gates] == [
        again.gates[0]["run_id"],
        runs[0],
    ]


def test_verdicts_from_before_the_history_still_show(legacy_store):
    from mlflow import MlflowClient

    from fct_registry.server.page import family_view, render_family

    view = family_view(MlflowClient(legacy_store, registry_uri=legacy_store), FAMILY)
    assert view.legacy_gates
    assert [(g["version"], g["verdict"], g["passed"], g["failed"]) for g in view.gates] == [
        (3, "pass", 2, 0),
        (2, "fail", 1, 1),
    ]
    page = render_family(view)
    assert "production now" in page and "badge fail" in page
    assert "recorded before the gate kept a history" in page
    v3 = MlflowClient(legacy_store, registry_uri=legacy_store).get_model_version(FAMILY, "3")
    assert "PASS against @1" in v3.description and "#gate-history" not in v3.description


def _own(client, version: int) -> float:
    return float(client.get_model_version(FAMILY, str(version)).tags["fct.top1"])


def _top1(client, version: int) -> float:
    tags = client.get_model_version(f"{FAMILY}-transformations", str(version)).tags
    return float(tags["fct.top1"])


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """``mlflow server --app-name fct`` on loopback (this checkout's entry points)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc, url = start_ui(store, log, app_name="fct", env=app_env(tmp_path_factory), timeout=120)
    try:
        yield url
    finally:
        stop(proc)


@pytest.mark.services
def test_the_server_serves_the_page_beside_the_mlflow_ui(server):
    with urllib.request.urlopen(f"{server}/fct/family/{FAMILY}", timeout=60) as response:
        page = response.read().decode()
    assert "Compatibility graph" in page and "Every measured pair" in page
    assert f"{FAMILY}@3" in page  # production
    with urllib.request.urlopen(f"{server}/fct/api/family/{FAMILY}", timeout=60) as response:
        data = json.loads(response.read())
    assert data["production"] == 3 and len(data["heatmap"]) == 6
    with urllib.request.urlopen(f"{server}/fct/", timeout=60) as response:
        assert f"family/{FAMILY}" in response.read().decode()
    assert http_ok(f"{server}/")  # the MLflow UI, same server
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{server}/fct/family/nope", timeout=60)
    assert missing.value.code == 404 and "nope" in missing.value.read().decode()


@pytest.mark.services
@pytest.mark.parametrize(
    ("shot", "route", "expect"),
    [
        ("compatibility-page.png", f"/fct/family/{FAMILY}", "Release gate history"),
        ("version-page.png", f"/#/models/{FAMILY}/versions/2", "trained on classes"),
    ],
)
def test_pages_render_in_chromium(server, tmp_path, shot, route, expect):
    """The DOM shows the content; the screenshot is kept (and copied into docs/ with
    FCT_UPDATE_DOCS=1, for the README)."""
    dom = chromium("--dump-dom", f"{server}{route}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert expect in dom.stdout
    if "fct/family" in route:  # every section, the gate history with its runs
        assert "Every measured pair" in dom.stdout and "gate-history-table" in dom.stdout
        assert dom.stdout.count("/runs/") >= 2 and "promoted" in dom.stdout
    if "versions" in route:  # the version page links the compatibility page and its hops
        assert f'href="fct/family/{FAMILY}"' in dom.stdout
        assert f'href="fct/family/{FAMILY}#gate-history"' in dom.stdout  # version 2 was gated
        assert re.search(r"┌─+┬─+┐", dom.stdout)
    png = tmp_path / shot
    out = chromium("--window-size=1400,1000", f"--screenshot={png}", f"{server}{route}")
    assert out.returncode == 0 and png.stat().st_size > 20_000, out.stderr[-2000:]
    if os.environ.get("FCT_UPDATE_DOCS") == "1":
        shutil.copyfile(png, DOCS / shot)


def test_graph_and_heatmap_pictures_go_to_the_family_experiment(store, tmp_path, monkeypatch):
    """`fct graph --log-to-mlflow`: both pictures in a run of `fct-<family>`, with artifacts
    beside the store's others (never a new experiment `<family>` or ./mlruns)."""
    from mlflow import MlflowClient

    from fct_registry.resolver.load import load_graph
    from fct_registry.resolver.plot import log_graph_to_mlflow, save_graph_png

    monkeypatch.chdir(tmp_path)
    client = MlflowClient(store, registry_uri=store)
    graph = load_graph(client, FAMILY)
    run_id = log_graph_to_mlflow(client, graph, save_graph_png(graph, tmp_path / "g.png"))
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == f"fct-{FAMILY}" and client.get_experiment_by_name(FAMILY) is None
    artifacts = {a.path for a in client.list_artifacts(run_id, "resolver")}
    assert {"resolver/compatibility_graph.png", "resolver/compatibility_heatmap.png"} <= artifacts
    assert run.data.metrics["measured_pairs"] == 6
    # The experiment registration created, whose artifacts sit beside the SQLite store.
    assert experiment.artifact_location.endswith(f"/mlartifacts/fct-{FAMILY}")
    assert run.info.artifact_uri.startswith(experiment.artifact_location + "/")
    assert not (tmp_path / "mlruns").exists()


def test_a_recorded_chain_is_a_first_class_version(store, registered):
    """Its own page links every hop; tags say what it was built from; the versions it
    connects list it in their link tables."""
    from mlflow import MlflowClient

    client = MlflowClient(store, registry_uri=store)
    name = f"{FAMILY}-transformations"
    (chain,) = client.search_model_versions(f"name = '{name}' AND tags.`fct.role` = 'chain'")
    t = registered.summary.transformations
    hops = [t["v1_to_v2"].version, t["v2_to_v3"].version]
    assert chain.tags["fct.hops"] == ",".join(map(str, hops))
    assert chain.tags["fct.kind"] == "fct+fct" and len(chain.tags["fct.git_commit"]) > 0
    assert json.loads(chain.tags["fct.params"])["hops"] == hops
    for hop in hops:
        assert f'<a href="#/models/{name}/versions/{hop}">' in chain.description
    link = f'<a href="#/models/{name}/versions/{chain.version}">'
    for end in (1, 3):  # the versions it connects
        assert link in client.get_model_version(FAMILY, str(end)).description
    assert link not in client.get_model_version(FAMILY, "2").description
    logged = client.get_logged_model(chain.source.removeprefix("models:/"))
    assert logged.name == f"{name}-chain-1-2-3"
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": name, "version": int(chain.version)}
    ]
