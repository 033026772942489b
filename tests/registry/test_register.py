"""Registering a real (tiny) pipeline into a SQLite store: versions, links, idempotency."""

from __future__ import annotations

import json
import re
import shutil

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file, save_file

from fct_registry.cli import main
from fct_registry.errors import DataError
from fct_registry.models.io import load_model as load_folder
from fct_registry.registry import flavor
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.errors import RegistryError
from fct_registry.registry.query import search_versions
from fct_registry.registry.register import register_pipeline
from fct_registry.registry.store import default_artifact_location, redact_uri, resolve_tracking_uri
from tests.registry.conftest import FAMILY

pytestmark = pytest.mark.slow
TRANSFORMATIONS = fct_tags.transformations_model_name(FAMILY)
SIDE_INFO = fct_tags.side_info_model_name(FAMILY)


def _versions(client, name):
    return {int(mv.version): mv for mv in search_versions(client, name)}


def _ids(csv: str) -> set[int]:
    return {int(v) for v in csv.split(",") if v}


def test_every_model_is_a_version_in_key_order(registered, client):
    s = registered.summary
    assert {k: v.version for k, v in s.embeddings.items()} == {"1": 1, "2": 2, "3": 3}
    assert s.side_info.version == 1 and s.created == 7 and s.unchanged == 0
    assert set(_versions(client, FAMILY)) == {1, 2, 3}
    assert set(_versions(client, SIDE_INFO)) == {1}
    transformations = _versions(client, TRANSFORMATIONS)
    assert sorted(transformations) == [1, 2, 3]  # gap-free
    for name, reg in s.transformations.items():
        cfg = registered.pipeline.params.transformations[name]
        tags = transformations[reg.version].tags
        assert (tags[fct_tags.SOURCE], tags[fct_tags.TARGET]) == (str(cfg.source), str(cfg.target))
        assert tags[fct_tags.PIPELINE_KEY] == name and tags[fct_tags.KIND] == cfg.kind
        alias = client.get_model_version_by_alias(TRANSFORMATIONS, f"pipeline-{name}")
        assert int(alias.version) == reg.version
    assert int(client.get_model_version_by_alias(FAMILY, "pipeline-3").version) == 3


def test_links_are_reachable_both_ways(registered, client):
    embeddings = _versions(client, FAMILY)
    transformations = _versions(client, TRANSFORMATIONS)
    side_infos = _versions(client, SIDE_INFO)
    for v, mv in embeddings.items():
        # embedding -> side-info extractor
        name, side_version = fct_tags.parse_model_ref(mv.tags[fct_tags.SIDE_INFO])
        assert name == SIDE_INFO and side_version in side_infos
        # embedding -> transformations into / out of it, exactly those whose ends name it
        assert _ids(mv.tags[fct_tags.TRANSFORMS_IN]) == {
            t for t, tv in transformations.items() if tv.tags[fct_tags.TARGET] == str(v)
        }
        assert _ids(mv.tags[fct_tags.TRANSFORMS_OUT]) == {
            t for t, tv in transformations.items() if tv.tags[fct_tags.SOURCE] == str(v)
        }
    for t, tv in transformations.items():
        # transformation -> its two ends (and back, checked above)
        assert t in _ids(embeddings[int(tv.tags[fct_tags.SOURCE])].tags[fct_tags.TRANSFORMS_OUT])
        assert t in _ids(embeddings[int(tv.tags[fct_tags.TARGET])].tags[fct_tags.TRANSFORMS_IN])
        if tv.tags[fct_tags.KIND] == "fct":
            assert fct_tags.parse_model_ref(tv.tags[fct_tags.SIDE_INFO]) == (SIDE_INFO, 1)
            assert tv.tags[fct_tags.SIDE_INFO_DIM] == "128"
        else:  # the no-side-info kind reads none
            assert fct_tags.SIDE_INFO not in tv.tags and tv.tags[fct_tags.SIDE_INFO_DIM] == "0"
    assert _ids(embeddings[1].tags[fct_tags.TRANSFORMS_OUT]) == {
        registered.summary.transformations[n].version for n in ("v1_to_v2", "v1_to_v2_no_side_info")
    }


def test_versions_carry_metrics_provenance_and_checksums(registered, client):
    metrics = json.loads((registered.pipeline.layout.evaluation / "metrics.json").read_text())
    v2 = client.get_model_version(FAMILY, "2")
    assert float(v2.tags[fct_tags.TOP1]) == pytest.approx(metrics["self"]["2"]["top1"], abs=1e-3)
    assert float(v2.tags[fct_tags.MAP]) == pytest.approx(metrics["self"]["2"]["mAP"], abs=1e-3)
    assert json.loads(v2.tags[fct_tags.PARAMS])["versions.2"]["embedding_dim"] == 128
    assert json.loads(v2.tags[fct_tags.CLASSES]) == (
        registered.pipeline.params.versions[2].classes or list(range(10))
    )
    assert v2.tags[fct_tags.GIT_COMMIT] == "unknown"  # the tiny project is not a git checkout
    assert v2.tags[fct_tags.DATASET] == "fashion-mnist" and len(v2.tags[fct_tags.DATA_SHA256]) == 64
    assert (
        v2.tags[fct_tags.EMBEDDING_DIM] == "128"
        and v2.tags[fct_tags.ROLE] == fct_tags.ROLE_EMBEDDING
    )
    assert float(v2.tags[fct_tags.ONNX_MAX_ABS_DIFF]) <= 1e-5
    assert len(v2.tags[fct_tags.CHECKSUMS_SHA256]) == 64 and fct_tags.CHECKSUMS not in v2.tags
    t = registered.summary.transformations["v1_to_v2"]
    tv = client.get_model_version(TRANSFORMATIONS, str(t.version))
    edge = metrics["transformations"]["v1_to_v2"]
    assert float(tv.tags[fct_tags.GAP_CLOSED_TOP1]) == pytest.approx(
        edge["gap_closed_top1"], abs=1e-3
    )

    run = client.get_run(tv.run_id)  # the run that trained-and-logged it
    assert run.data.params["transformations.v1_to_v2.kind"] == "fct"
    assert run.data.params["seed"] == "0"
    assert run.data.metrics["eval.top1"] == pytest.approx(edge["top1"])
    history = client.get_metric_history(run.info.run_id, "train.loss")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "history")}
    assert artifacts == {"history/transform-v1_to_v2.csv"}


def _a(name: str, version: int | str) -> str:
    return f'<a href="#/models/{name}/versions/{version}">{name}/{version}</a>'


def test_descriptions_tell_the_story_in_one_table_per_version(registered, client):
    side_link = _a(SIDE_INFO, 1)
    page = f"[compatibility page](fct/family/{FAMILY})"
    for v in (1, 2, 3):
        text = client.get_model_version(FAMILY, str(v)).description
        assert side_link in text and text.startswith(f"{FAMILY}@{v}: ") and page in text
        assert text.count("<pre>") == 1 and "┌" in text and "└" in text  # one bordered table
        assert "Compatibility (test split" not in text  # the matrix lives on the page
    v1 = client.get_model_version(FAMILY, "1").description
    classes = registered.pipeline.params.versions[1].classes or list(range(10))
    shown = f"{classes[0]}–{classes[-1]}"
    assert "│ trained on classes" in v1 and f"│ {shown}" in v1
    for name in ("v1_to_v2", "v1_to_v2_no_side_info"):
        t = registered.summary.transformations[name].version
        assert _a(TRANSFORMATIONS, t) in v1
    t = registered.summary.transformations["v2_to_v3"].version
    text = client.get_model_version(TRANSFORMATIONS, str(t)).description
    assert _a(FAMILY, 2) in text and _a(FAMILY, 3) in text and side_link in text
    assert "old→new gap closed" in text and len(text) <= 5000
    assert "read by" in client.get_model_version(SIDE_INFO, "1").description


def test_box_table_columns_line_up_whatever_the_links():
    from fct_registry.registry import description as descriptions

    html = descriptions.box_table(
        [("a", descriptions.link("m", 12)), ("longer key", "x"), ("", descriptions.join("p", "q"))]
    )
    lines = html.removeprefix("<pre>\n").removesuffix("\n</pre>").splitlines()
    visible = [re.sub(r"<[^>]+>", "", line) for line in lines]
    assert len({len(line) for line in visible}) == 1  # every line as wide as the border
    assert visible[1] == "│ a          │ m/12 │"
    assert '<a href="#/models/m/versions/12">m/12</a>' in lines[1]


def test_registered_transformation_upgrades_like_the_pipeline_model(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registered.uri)
    layout = registered.pipeline.layout
    from fct_registry.layout import load_embeddings

    old = load_embeddings(layout.version_embeddings(1))["test"][:50]
    side = load_embeddings(layout.side_info_embeddings)["test"][:50]
    module, _ = load_folder(layout.transformation("v1_to_v2"))
    with torch.no_grad():
        want = module(old, side).numpy()
    uri = registered.summary.transformations["v1_to_v2"].uri
    with mlflow.tracking._tracking_service.utils._use_tracking_uri(registered.uri):
        got = mlflow.pyfunc.load_model(uri).predict(
            {"old_embedding": old.numpy(), "side_info": side.numpy()}
        )
        chain = flavor.load_model(uri)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    with torch.no_grad():
        np.testing.assert_array_equal(chain(old, side).numpy(), want)


def test_registering_again_creates_nothing(registered, client):
    before = {n: len(_versions(client, n)) for n in (FAMILY, SIDE_INFO, TRANSFORMATIONS)}
    runs = len(client.search_runs([client.get_experiment_by_name("fct-fashion").experiment_id]))
    again = register_pipeline(
        registered.pipeline.params,
        registered.pipeline.layout,
        registered.uri,
        root=registered.pipeline.root,
    )
    assert again.created == 0 and again.unchanged == 7
    assert {k: v.version for k, v in again.embeddings.items()} == {
        k: v.version for k, v in registered.summary.embeddings.items()
    }
    assert {n: len(_versions(client, n)) for n in before} == before
    assert (
        len(client.search_runs([client.get_experiment_by_name("fct-fashion").experiment_id]))
        == runs
    )
    assert client.search_registered_models(f"name = '{fct_tags.lock_model_name(FAMILY)}'") == []


def test_changed_models_map_keys_to_new_versions(registered, tmp_path):
    """Retrained version 3 (new weights) becomes fashion/4, registered from params key 3; the
    unchanged weights of 2-3 now connect 2 -> 4, which is a new transformation version."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(registered.uri.removeprefix("sqlite:///"), store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    pipeline = registered.pipeline.copy_to(tmp_path / "project")
    weights = pipeline.layout.version(3) / "model.safetensors"
    state = load_file(str(weights))
    state["embedding.bias"] = state["embedding.bias"] + 0.01
    save_file(state, str(weights))

    s = register_pipeline(pipeline.params, pipeline.layout, uri, root=pipeline.root)
    assert {k: (v.version, v.created) for k, v in s.embeddings.items()} == {
        "1": (1, False),
        "2": (2, False),
        "3": (4, True),
    }
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_model_version(FAMILY, "4").tags[fct_tags.PIPELINE_KEY] == "3"
    assert int(client.get_model_version_by_alias(FAMILY, "pipeline-3").version) == 4
    moved = s.transformations["v2_to_v3"]
    assert moved.created and (moved.source, moved.target) == (2, 4) and moved.version == 4
    assert not s.transformations["v1_to_v2"].created
    tags = client.get_model_version(TRANSFORMATIONS, "4").tags
    assert (tags[fct_tags.SOURCE], tags[fct_tags.TARGET]) == ("2", "4")
    assert _ids(client.get_model_version(FAMILY, "2").tags[fct_tags.TRANSFORMS_OUT]) == {
        registered.summary.transformations["v2_to_v3"].version,
        4,
    }
    assert _ids(client.get_model_version(FAMILY, "4").tags[fct_tags.TRANSFORMS_IN]) == {4}
    assert re.search(r"│ params.yaml key +│ 3 ", client.get_model_version(FAMILY, "4").description)


def test_cli_register_json(registered, tmp_path, capsys):
    root = registered.pipeline.root
    # a copy: `fct register` also records the measured chains, which the shared store lacks
    shutil.copyfile(registered.uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    code = main(
        [
            "register",
            "--params",
            str(root / "params.yaml"),
            "--outputs",
            str(root / "outputs"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["created"] == 0 and out["embeddings"]["2"]["version"] == 2
    assert out["transformations"]["v2_to_v3"]["target"] == 3


def test_missing_evaluation_names_the_stage(registered, tmp_path):
    pipeline = registered.pipeline.copy_to(tmp_path / "project")
    (pipeline.layout.evaluation / "metrics.json").unlink()
    with pytest.raises(DataError, match="evaluate stage"):
        register_pipeline(pipeline.params, pipeline.layout, registered.uri)


def test_unreachable_store_error_has_no_password(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(RegistryError) as err:
        register_pipeline(
            registered.pipeline.params,
            registered.pipeline.layout,
            "http://alice:hunter2@127.0.0.1:9/",
        )
    assert "hunter2" not in str(err.value) and "127.0.0.1:9" in str(err.value)


@pytest.mark.parametrize(
    ("uri", "safe"),
    [
        ("postgresql+psycopg2://fct:s3cret@db:5432/mlflow", "postgresql+psycopg2://db:5432/mlflow"),
        ("http://user:pw@mlflow:5000", "http://mlflow:5000"),
        ("https://token@host/x?password=abc&db=1", "https://host/x?password=***&db=1"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("error: cannot reach http://a:b@h:1/api", "error: cannot reach http://h:1/api"),
    ],
)
def test_redact_uri(uri, safe):
    assert redact_uri(uri) == safe


def test_default_store_is_sqlite_in_the_project_with_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(None, tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert (
        default_artifact_location(uri, "fashion")
        == (tmp_path.resolve() / "mlartifacts" / "fct-fashion").as_uri()
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://server:5000"
    assert default_artifact_location("http://server:5000", "fashion") is None


def _registry_state(uri: str) -> dict:
    """Every version of the family's three models with the tags that define it (not run ids,
    commits or timestamps, which differ between two registrations of the same outputs)."""
    client = MlflowClient(uri, registry_uri=uri)
    keep = (fct_tags.ROLE, fct_tags.PIPELINE_KEY, fct_tags.CONTENT_HASH, fct_tags.SOURCE,
            fct_tags.TARGET, fct_tags.HOPS, fct_tags.SIDE_INFO,
            fct_tags.TOP1, fct_tags.TOP5, fct_tags.MAP, fct_tags.GAP_CLOSED_TOP1)  # fmt: skip
    return {
        name: {
            int(mv.version): {k: mv.tags.get(k) for k in keep}
            | {"measured": fct_tags.MEASURED_RUN in mv.tags}
            for mv in search_versions(client, name)
        }
        for name in (FAMILY, SIDE_INFO, TRANSFORMATIONS)
    }


def test_cli_register_gives_the_stage_registry_with_measured_chains(
    registered, empty_store, tmp_path, monkeypatch, capsys
):
    """`fct register` into a fresh store registers what the DVC stage registers, chains
    measured end to end included, so `fct resolve` compares measurements right away."""
    import pipelines.register as stage
    from fct_registry.registry.refs import parse_ref
    from fct_registry.resolver import load_graph, resolve

    uris = {}
    for name in ("cli", "stage"):
        (tmp_path / name).mkdir()
        shutil.copyfile(empty_store, tmp_path / name / "mlflow.db")
        uris[name] = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
    root = registered.pipeline.root
    argv = ["register", "--params", str(root / "params.yaml"), "--outputs",
            str(root / "outputs"), "--tracking-uri", uris["cli"]]  # fmt: skip
    assert main(argv) == 0
    assert "recorded" in capsys.readouterr().out
    project = registered.pipeline.copy_to(tmp_path / "project")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uris["stage"])
    stage._register(project.params, project.layout, None)

    cli, by_stage = _registry_state(uris["cli"]), _registry_state(uris["stage"])
    assert cli == by_stage
    chains = [v for v in cli[TRANSFORMATIONS].values() if v[fct_tags.ROLE] == fct_tags.ROLE_CHAIN]
    assert chains and all(c["measured"] and c[fct_tags.TOP1] for c in chains)
    client = MlflowClient(uris["cli"], registry_uri=uris["cli"])
    got = resolve(load_graph(client, FAMILY), parse_ref("fashion@1"), parse_ref("fashion@3"))
    assert got.chosen.measured  # a recorded chain or a direct edge, never an estimate


def test_measurements_carry_the_run_that_logged_them(registered, tmp_path):
    """Every fct.top1 the tool writes names its run, which holds the same number; a version
    registered before the tag existed gets it when registered again."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(registered.uri.removeprefix("sqlite:///"), store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    measured = [mv for mv in search_versions(client, TRANSFORMATIONS) if fct_tags.TOP1 in mv.tags]
    assert measured
    for mv in measured:
        run = client.get_run(mv.tags[fct_tags.MEASURED_RUN])
        logged = (
            "top1" if mv.tags[fct_tags.ROLE] == fct_tags.ROLE_CHAIN else "eval.top1"
        )  # a chain's own run
        assert run.data.metrics[logged] == pytest.approx(float(mv.tags[fct_tags.TOP1]), abs=1e-3)
    old = measured[0]
    client.delete_model_version_tag(TRANSFORMATIONS, old.version, fct_tags.MEASURED_RUN)
    pipeline = registered.pipeline
    register_pipeline(pipeline.params, pipeline.layout, uri, root=pipeline.root)
    again = client.get_model_version(TRANSFORMATIONS, old.version).tags
    run = client.get_run(again[fct_tags.MEASURED_RUN])
    assert run.data.metrics["eval.top1"] == pytest.approx(float(again[fct_tags.TOP1]), abs=1e-3)


def test_backfill_transformation_is_registered_and_a_backfill_plans_by_uncertainty(
    registered, empty_store, tmp_path, capsys
):
    """The backfill stage's uncertainty-aware transformation is registered with its measurement,
    so on this registry `fct upgrade --for-backfill` writes the uncertainty column and
    `fct backfill plan` works with its default policy."""
    from fct_registry.registry.register import BACKFILL_KEY, register_all
    from fct_registry.stages.backfill import backfill_stage

    project = registered.pipeline.copy_to(tmp_path / "project")
    metrics = backfill_stage(project.params, project.layout)
    store = tmp_path / "store"
    store.mkdir()
    shutil.copyfile(empty_store, store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    summary, _ = register_all(project.params, project.layout, uri, root=project.root)
    reg = summary.transformations[BACKFILL_KEY]
    assert reg.created and (reg.source, reg.target) == (1, 3)
    tags = MlflowClient(uri, registry_uri=uri).get_model_version(TRANSFORMATIONS, reg.version).tags
    first = metrics["per_seed"][metrics["seeds"][0]]["transform_only"]["uncertainty"]
    assert (
        tags[fct_tags.KIND] == fct_tags.KIND_UNCERTAINTY
        and tags[fct_tags.PIPELINE_KEY] == BACKFILL_KEY
    )
    assert float(tags[fct_tags.TOP1]) == pytest.approx(first["top1"], abs=1e-3)
    assert tags[fct_tags.MEASURED_RUN]

    uri_args = ["--tracking-uri", uri]
    g1, g3, plan = tmp_path / "g1", tmp_path / "g3", tmp_path / "plan.json"
    embed = ["embed", "--model", "fashion@1", "--data", str(project.layout.data), "--split",
             "test", "--out", str(g1), "--device", "cpu", "--no-progress", *uri_args]  # fmt: skip
    assert main(embed) == 0
    assert main(["upgrade", "--gallery", str(g1), "--to", "fashion@3", "--for-backfill",
                 "--out", str(g3), "--no-progress", *uri_args]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["backfill", "plan", "--gallery", str(g3), "--budget", "10%", "--out",
                 str(plan)]) == 0  # fmt: skip
    written = json.loads(plan.read_text())
    assert written["policy"] == "uncertainty" and len(written["items"]) > 0
