"""A resolved chain as one model: loaded through the flavor, evaluated, recorded, exported.

One small family is registered for the whole module (logging a model exports ONNX, seconds
each): embedding versions 1..3 whose stored embeddings live under pipeline keys 11..13 (so the
``fct.pipeline_key`` mapping is exercised), and transformations 1->2, 2->3, 1->3.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import save_file

from fct_registry.cli import main
from fct_registry.evaluation.retrieval import RetrievalScores, retrieval_scores
from fct_registry.layout import Layout
from fct_registry.models.transformations import TRANSFORMATIONS
from fct_registry.registry import flavor
from fct_registry.registry import tags as fct_tags
from fct_registry.registry.chains import ChainEvaluation, load_chain, record_chain
from fct_registry.registry.refs import parse_ref
from fct_registry.resolver import load_graph, resolve
from fct_registry.resolver.chain import evaluate_chain, export_chain_onnx
from tests.resolver.records import FAMILY, SIDE, TRANSFORMS, emb, side

DIM, SIDE_DIM, N_ITEMS, CLASSES = 6, 5, 60, 3
EDGES = {1: (1, 2, 90.0), 2: (2, 3, 85.0), 3: (1, 3, 70.0)}  # version: (from, to, top-1)


def _spec() -> dict:
    return {
        "kind": "transformation",
        "type": "fct",
        "old_dim": DIM,
        "new_dim": DIM,
        "side_info_dim": SIDE_DIM,
        "hidden_dim": 8,
    }


def _write_outputs(layout: Layout) -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(N_ITEMS) % CLASSES
    layout.data.mkdir(parents=True)
    save_file(
        {"images": torch.zeros(N_ITEMS, 1, 2, 2, dtype=torch.uint8), "labels": labels},
        str(layout.data / "test.safetensors"),
    )
    layout.embeddings.mkdir(parents=True)
    for key in (11, 12, 13):
        centres = torch.randn(CLASSES, DIM, generator=gen) * 3
        emb_ = centres[labels] + torch.randn(N_ITEMS, DIM, generator=gen)
        save_file({"test": emb_}, str(layout.version_embeddings(key)))
    save_file(
        {"test": torch.randn(N_ITEMS, SIDE_DIM, generator=gen)}, str(layout.side_info_embeddings)
    )


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory, _empty_store: Path) -> Iterator:
    root = tmp_path_factory.mktemp("chain-family")
    shutil.copyfile(_empty_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # default artifact locations (./mlruns) land here too
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient()
        for rec in [emb(1), emb(2), emb(3), side(1)]:
            if not client.search_registered_models(f"name = '{rec.name}'"):
                client.create_registered_model(rec.name)
            tags = rec.tags | {fct_tags.PIPELINE_KEY: str(int(rec.version) + 10)}
            client.create_model_version(rec.name, source="/nonexistent", tags=tags)
        torch.manual_seed(0)
        modules = {}
        mlflow.set_experiment(FAMILY)
        for version, (source, target, top1) in EDGES.items():
            module = TRANSFORMATIONS.build(
                "fct", old_dim=DIM, new_dim=DIM, side_info_dim=SIDE_DIM, hidden_dim=8
            ).eval()
            tags = {
                fct_tags.ROLE: fct_tags.ROLE_TRANSFORMATION,
                fct_tags.SOURCE: str(source),
                fct_tags.TARGET: str(target),
                fct_tags.SIDE_INFO: SIDE,
                fct_tags.KIND: "fct",
                fct_tags.TOP1: str(top1),
                fct_tags.MEASURED_RUN: "test-measurement",
            }
            with mlflow.start_run():
                info = flavor.log_model(
                    module,
                    name="transformation",
                    spec=_spec(),
                    registered_model_name=TRANSFORMS,
                    tags=tags,
                )
            assert info.registered_model_version == version
            modules[version] = module
        layout = Layout(root / "outputs")
        _write_outputs(layout)
        yield SimpleNamespace(uri=uri, client=client, modules=modules, layout=layout, root=root)
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def _two_hop(family: SimpleNamespace):
    graph = load_graph(family.client, FAMILY)
    res = resolve(graph, parse_ref("fashion@1"), parse_ref("fashion@3"))
    route = next(r for r in (res.chosen, *res.alternatives) if r is not None and r.n_hops == 2)
    return graph, res, route


def _by_hand(family: SimpleNamespace, hops: list[int]) -> torch.Tensor:
    """The two hops applied one after the other with the modules as logged."""
    from safetensors.torch import load_file

    old = load_file(str(family.layout.version_embeddings(11)))["test"]
    side_info = load_file(str(family.layout.side_info_embeddings))["test"]
    with torch.no_grad():
        for h in hops:
            old = family.modules[h](old, side_info)
    return old


def test_load_chain_applies_the_registered_hops_in_order(family: SimpleNamespace) -> None:
    _, _, route = _two_hop(family)
    loaded = load_chain(FAMILY, route.hops, route.path)
    assert loaded.hops == (1, 2) and loaded.path == (1, 2, 3)
    assert (loaded.old_dim, loaded.side_info_dim) == (DIM, SIDE_DIM)
    from safetensors.torch import load_file

    old = load_file(str(family.layout.version_embeddings(11)))["test"]
    side_info = load_file(str(family.layout.side_info_embeddings))["test"]
    with torch.no_grad():
        got = loaded.module(old, side_info)
    torch.testing.assert_close(got, _by_hand(family, [1, 2]))


def test_evaluate_chain_measures_new_queries_against_the_upgraded_gallery(
    family: SimpleNamespace,
) -> None:
    graph, _, route = _two_hop(family)
    loaded = load_chain(FAMILY, route.hops, route.path)
    keys = (graph.stored_as(1), graph.stored_as(3))
    assert keys == (11, 13)
    got = evaluate_chain(loaded, family.layout, stored_as=keys)
    from safetensors.torch import load_file

    new = load_file(str(family.layout.version_embeddings(13)))["test"]
    labels = torch.arange(N_ITEMS) % CLASSES
    want = retrieval_scores(new, _by_hand(family, [1, 2]), labels, labels, leave_one_out=True)
    assert got.cross == want
    assert got.items == N_ITEMS and got.hops == (1, 2)


def test_record_chain_registers_once_and_resolve_uses_the_measurement(
    family: SimpleNamespace,
) -> None:
    graph, before, route = _two_hop(family)
    assert before.chosen is not None and before.chosen.hops == (1, 2)  # estimate 76.5 > 70
    loaded = load_chain(FAMILY, route.hops, route.path)
    scores = RetrievalScores(top1=64.0, top5=90.0, mAP=55.0)  # measured worse than the estimate
    evaluation = ChainEvaluation(1, 3, (1, 2), scores, scores, scores, N_ITEMS, "l2")
    version, created = record_chain(family.client, loaded, evaluation, SIDE)
    assert created and version == 4
    tags = family.client.get_model_version(TRANSFORMS, "4").tags
    assert (
        tags[fct_tags.ROLE] == fct_tags.ROLE_CHAIN
        and tags[fct_tags.HOPS] == "1,2"
        and tags[fct_tags.TOP1] == "64.0000"
    )
    assert (tags[fct_tags.SOURCE], tags[fct_tags.TARGET], tags[fct_tags.SIDE_INFO]) == (
        "1",
        "3",
        SIDE,
    )
    # The recorded chain is itself a model: one module applying both hops.
    as_model = flavor.load_model(f"models:/{TRANSFORMS}/4")
    assert len(as_model.hops) == 2

    again = ChainEvaluation(
        1, 3, (1, 2), scores.__class__(66.0, 91.0, 56.0), scores, scores, N_ITEMS, "l2"
    )
    assert record_chain(family.client, loaded, again, SIDE) == (4, False)
    graph = load_graph(family.client, FAMILY)
    assert [c.model_version for c in graph.chains] == [4]
    after = resolve(graph, parse_ref("fashion@1"), parse_ref("fashion@3"))
    assert after.chosen is not None and after.chosen.hops == (3,)  # 70 (measured) > 66 (measured)
    assert after.alternatives[0].recorded_chain is not None
    assert after.alternatives[0].top1 == 66.0


def test_export_is_one_graph_matching_hop_by_hop(family: SimpleNamespace) -> None:
    import onnx
    import onnxruntime as ort

    _, _, route = _two_hop(family)
    loaded = load_chain(FAMILY, route.hops, route.path)
    path = family.root / "chain.onnx"
    old = torch.randn(37, DIM)
    side_info = torch.randn(37, SIDE_DIM)
    diff = export_chain_onnx(loaded, path, check_inputs=(old, side_info))
    assert diff < 1e-4
    assert len(onnx.load(str(path)).graph.input) == 2
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"old_embedding": old.numpy(), "side_info": side_info.numpy()})
    with torch.no_grad():
        want = family.modules[2](family.modules[1](old, side_info), side_info).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_cli_export_onnx(family: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    path = family.root / "cli.onnx"
    argv = [
        "resolve",
        "fashion@1",
        "fashion@3",
        "--json",
        "--export-onnx",
        str(path),
        "--outputs",
        str(family.layout.root),
        "--tracking-uri",
        family.uri,
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["onnx"]["checked_on"] == "stored test embeddings"
    assert out["onnx"]["max_abs_diff"] < 1e-4
    assert out["onnx"]["transformations"] == [h["model_version"] for h in out["chosen"]["hops"]]
    assert path.is_file()


def test_cli_evaluate_and_record_then_resolves_on_measurements(
    family: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "resolve",
        "fashion@1",
        "fashion@3",
        "--json",
        "--evaluate",
        "--record",
        "--outputs",
        str(family.layout.root),
        "--tracking-uri",
        family.uri,
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    # Whatever the earlier tests recorded, the chosen route and every estimated alternative
    # were measured, the two-hop route now has a recorded chain, and the final answer rests
    # on measurements only.
    assert out["evaluations"] and all(e["items"] == N_ITEMS for e in out["evaluations"])
    routes = [out["chosen"], *out["alternatives"]]
    assert all(r["measured"] for r in routes)
    two_hop = next(r for r in routes if r["path"] == [1, 2, 3])
    assert two_hop["recorded_chain"] is not None
    measured = {tuple(e["hops"]): e["top1"] for e in out["evaluations"]}
    if (1, 2) in measured:  # measured in this run: the record carries this very number
        assert two_hop["top1"] == pytest.approx(measured[(1, 2)], abs=1e-4)
