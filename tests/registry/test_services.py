"""Against the production setup, for real: an MLflow server with a PostgreSQL backend store and
S3 artifacts (moto_server), all on 127.0.0.1. Registration through it, credentials kept out of
everything, and 8 processes registering into one family at once."""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file, save_file

from fct_registry.models.io import load_model as load_folder
from fct_registry.registry import flavor
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.query import search_versions
from fct_registry.registry.register import register_pipeline
from fct_registry.registry.store import use_tracking_uri
from tests.registry import concurrent_worker
from tests.registry.conftest import TinyPipeline

pytestmark = [pytest.mark.services, pytest.mark.slow]
SECRET = "Sup3r-s3cret-pw"
FAMILY = "fashion-srv"  # its own family: the server is shared by the whole test session
TRANSFORMATIONS = fct_tags.transformations_model_name(FAMILY)


@dataclass(frozen=True)
class ServerRegistration:
    url: str  # with credentials in it
    client: MlflowClient
    pipeline: TinyPipeline
    summary: object
    output: str  # everything registration printed


@pytest.fixture(scope="module")
def via_server(
    mlflow_server, tiny_pipeline: TinyPipeline, tmp_path_factory: pytest.TempPathFactory
) -> ServerRegistration:
    pipeline = tiny_pipeline.copy_to(tmp_path_factory.mktemp("server") / "project", family=FAMILY)
    host = mlflow_server.url.removeprefix("http://")
    url = f"http://fct-user:{SECRET}@{host}"  # the server ignores basic auth; we must not leak it
    import contextlib
    import io
    import logging

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logging.getLogger().addHandler(handler)
    logging.getLogger("fct_registry").setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            summary = register_pipeline(pipeline.params, pipeline.layout, url, root=pipeline.root)
    finally:
        logging.getLogger().removeHandler(handler)
    return ServerRegistration(
        url, MlflowClient(mlflow_server.url, mlflow_server.url), pipeline, summary, out.getvalue()
    )


def _all_versions(client):
    names = [FAMILY, fct_tags.side_info_model_name(FAMILY), TRANSFORMATIONS]
    return {name: search_versions(client, name) for name in names}


def test_registered_through_the_server_with_artifacts_in_s3(via_server, mlflow_server, tmp_path):
    s = via_server.summary
    assert s.created == 7
    versions = _all_versions(via_server.client)
    assert [int(mv.version) for mv in versions[FAMILY]] == [1, 2, 3]
    assert [int(mv.version) for mv in versions[TRANSFORMATIONS]] == [1, 2, 3]
    experiment = via_server.client.get_experiment_by_name(fct_tags.experiment_name(FAMILY))
    keys = mlflow_server.s3.keys(f"{mlflow_server.prefix}/{experiment.experiment_id}/")
    for name in ("model.onnx", "checksums.json", "modules/0/model.safetensors", "MLmodel"):
        assert sum(k.endswith("/" + name) for k in keys) == 7, name
    assert any(k.endswith("history/v2.csv") for k in keys)

    # Downloaded from S3 through the server, verified against the registry, equal to the
    # pipeline's module.
    layout = via_server.pipeline.layout
    from fct_registry.layout import load_embeddings

    old = load_embeddings(layout.version_embeddings(2))["test"][:40]
    side = load_embeddings(layout.side_info_embeddings)["test"][:40]
    module, _ = load_folder(layout.transformation("v2_to_v3"))
    with use_tracking_uri(mlflow_server.url):
        chain = flavor.load_model(s.transformations["v2_to_v3"].uri, dst_path=str(tmp_path))
    with torch.no_grad():
        np.testing.assert_array_equal(chain(old, side).numpy(), module(old, side).numpy())


def test_no_credentials_anywhere(via_server, mlflow_server):
    client = via_server.client
    assert SECRET not in via_server.output and "fct-user" not in via_server.output
    assert SECRET not in json.dumps(via_server.summary.as_dict())
    assert via_server.summary.tracking_uri == mlflow_server.url
    texts = []
    for versions in _all_versions(client).values():
        for mv in versions:
            texts += [mv.description or "", json.dumps(mv.tags), mv.source or ""]
            run = client.get_run(mv.run_id)
            texts += [json.dumps(run.data.params), json.dumps(run.data.tags), run.info.artifact_uri]
    for rm in client.search_registered_models():
        texts += [rm.description or "", json.dumps(rm.tags)]
    experiment = client.get_experiment_by_name(fct_tags.experiment_name(FAMILY))
    texts += [experiment.artifact_location, json.dumps(experiment.tags)]
    s3 = mlflow_server.s3
    for key in s3.keys():  # noqa: SIM118 (S3 object keys, not a dict)
        if not key.endswith((".safetensors", ".onnx")):
            texts.append(
                s3.client()
                .get_object(Bucket=s3.bucket, Key=key)["Body"]
                .read()
                .decode("utf-8", "replace")
            )
    assert len(texts) > 50
    leaks = [t[:200] for t in texts if SECRET in t or "fct-user" in t]
    assert leaks == []


def test_eight_processes_at_once_lose_and_duplicate_nothing(via_server, mlflow_server, tmp_path):
    """8 processes register into the family at once. Four retrained 1-2 transformations, each
    registered by two processes racing each other; everything else is already registered."""
    projects = []
    for i in range(4):
        project = via_server.pipeline.copy_to(tmp_path / f"project-{i}")
        weights = project.layout.transformation("v1_to_v2") / "model.safetensors"
        state = load_file(str(weights))
        state["mixer.1.bias"] = state["mixer.1.bias"] + 0.001 * (i + 1)
        save_file(state, str(weights))
        projects.append(project)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(concurrent_worker.PRELOAD)
    barrier = ctx.Barrier(8)
    outs = [tmp_path / f"result-{i}.json" for i in range(8)]
    procs = [
        ctx.Process(
            target=concurrent_worker.register_worker,
            args=(str(projects[i // 2].root), mlflow_server.url, str(outs[i]), barrier),
        )
        for i in range(8)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=600)
    results = [
        json.loads(out.read_text()) if out.exists() else {"error": "no result"} for out in outs
    ]
    assert [r.get("error") for r in results] == [None] * 8, results
    assert {len({p.pid for p in procs}), *(p.exitcode for p in procs)} == {8, 0}

    client = via_server.client
    versions = search_versions(client, TRANSFORMATIONS)
    numbers = [int(mv.version) for mv in versions]
    assert numbers == list(range(1, 8))  # unique and gap-free: 3 before + 4 new
    identities = [
        (mv.tags[fct_tags.CONTENT_HASH], mv.tags[fct_tags.SOURCE], mv.tags[fct_tags.TARGET])
        for mv in versions
    ]
    assert len(set(identities)) == len(identities)  # no duplicates
    new = {r["transformations"]["v1_to_v2"]["version"] for r in results}
    assert len(new) == 4 and new.isdisjoint(
        {v.version for v in via_server.summary.transformations.values()}
    )
    for i in range(0, 8, 2):  # racing twins agree on the one version their content got
        assert results[i]["transformations"]["v1_to_v2"] == {
            **results[i + 1]["transformations"]["v1_to_v2"],
            "created": results[i]["transformations"]["v1_to_v2"]["created"],
        }
        assert {
            results[i]["transformations"]["v1_to_v2"]["created"],
            results[i + 1]["transformations"]["v1_to_v2"]["created"],
        } == {True, False}
    assert sum(r["created"] for r in results) == 4  # nothing else was registered again
    assert [int(mv.version) for mv in search_versions(client, FAMILY)] == [1, 2, 3]

    # The graph is consistent: every embedding version lists exactly the transformations
    # whose ends name it, including all four new ones.
    for mv in search_versions(client, FAMILY):
        v = mv.version
        into = {int(t.version) for t in versions if t.tags[fct_tags.TARGET] == str(v)}
        out_of = {int(t.version) for t in versions if t.tags[fct_tags.SOURCE] == str(v)}
        assert {int(x) for x in mv.tags.get(fct_tags.TRANSFORMS_IN, "").split(",") if x} == into
        assert {int(x) for x in mv.tags.get(fct_tags.TRANSFORMS_OUT, "").split(",") if x} == out_of
    assert new <= {
        int(x)
        for x in client.get_model_version(FAMILY, "1").tags[fct_tags.TRANSFORMS_OUT].split(",")
    }
    assert client.search_registered_models(f"name = '{fct_tags.lock_model_name(FAMILY)}'") == []
