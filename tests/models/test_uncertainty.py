"""The uncertainty-aware transformation: contract, loss, training, ONNX export, upgrade column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from fct_registry.config import OptimConfig, UncertaintyTrainingConfig
from fct_registry.errors import ConfigError
from fct_registry.gallery import make_batch
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.pg.location import PgLocation
from fct_registry.model_specs import TransformationSpec
from fct_registry.models.io import build_from_spec
from fct_registry.models.transformations import TRANSFORMATIONS, TransformationChain
from fct_registry.models.uncertainty import (
    KIND,
    UncertaintyTransformation,
    WithUncertainty,
    chain_predicts_uncertainty,
)
from fct_registry.registry.onnx_export import UNCERTAINTY_OUTPUT, export_onnx
from fct_registry.training.uncertainty import (
    class_index,
    gaussian_nll,
    loss_nll,
    point_to_cluster,
    predict_with_uncertainty,
    train_uncertainty_transformation,
)
from fct_registry.upgrade.batch import BatchPlan, GroupRunner, upgrade_batch
from fct_registry.upgrade.pgvector import Source, upgrade_to_pg
from fct_registry.upgrade.plan import UpgradePlan
from fct_registry.upgrade.runner import OnnxChainRunner
from tests.support.pgvector import load_rows, matrix, read_all, serve_embedded
from tests.upgrade.conftest import FAMILY, SIDE, synthetic_rows


def _model(seed=0, old=8, new=6, side=4, hidden=16):
    torch.manual_seed(seed)
    h = TRANSFORMATIONS.build(KIND, old_dim=old, new_dim=new, side_info_dim=side, hidden_dim=hidden)
    for m in h.modules():  # non-trivial batch-norm statistics, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return h.eval()


def test_contract_and_forward_is_the_embedding():
    h = _model()
    assert isinstance(h, UncertaintyTransformation) and chain_predicts_uncertainty(h)
    old, side = torch.randn(5, 8), torch.randn(5, 4)
    emb, log_var = h.predict(old, side)
    assert emb.shape == (5, 6) and log_var.shape == (5,)
    assert torch.equal(h(old, side), emb)
    chain = TransformationChain(
        [
            TRANSFORMATIONS.build(
                "fct", old_dim=8, new_dim=8, side_info_dim=4, hidden_dim=8
            ).eval(),
            h,
        ]
    )
    assert chain_predicts_uncertainty(chain)
    assert not chain_predicts_uncertainty(
        TransformationChain(
            [h, TRANSFORMATIONS.build("fct", old_dim=6, new_dim=6, side_info_dim=4, hidden_dim=8)]
        )
    )
    both = WithUncertainty(chain)(old, side)
    assert torch.equal(both[0], chain(old, side))
    spec = {
        "kind": "transformation",
        "type": KIND,
        "old_dim": 8,
        "new_dim": 6,
        "side_info_dim": 4,
        "hidden_dim": 16,
    }
    assert isinstance(build_from_spec(spec), UncertaintyTransformation)


def test_gaussian_nll_definition_and_minimum():
    pred, target = torch.randn(7, 3), torch.randn(7, 3)
    s = torch.randn(7)
    err = ((pred - target) ** 2).mean(1)
    want = (0.5 * (err / torch.exp(s) + s)).mean()
    assert gaussian_nll(pred, s, target) == pytest.approx(float(want), rel=1e-6)
    # minimum over s at exp(s) = err: zero gradient there
    s_opt = torch.log(err).requires_grad_(True)
    gaussian_nll(pred, s_opt, target).backward()
    assert s_opt.grad.abs().max() < 1e-6
    # beta = 1: the embedding gets the MSE gradient (per item weight exp(s) cancels 1/exp(s))
    p1 = pred.clone().requires_grad_(True)
    gaussian_nll(p1, s, target, beta=1.0).backward()
    p2 = pred.clone().requires_grad_(True)
    (0.5 * ((p2 - target) ** 2).mean(1)).mean().backward()
    torch.testing.assert_close(p1.grad, p2.grad)


def test_point_to_cluster_is_the_per_item_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    clf = torch.nn.Linear(6, 3)
    pred, labels = torch.randn(9, 6, generator=gen), torch.tensor([0, 1, 2, 3] * 2 + [1])
    index = class_index([2, 0, 1], 4)  # label 3: no output of the classifier
    got = point_to_cluster(pred, labels, clf, index)
    logp = torch.log_softmax(clf(pred), 1)
    for i, label in enumerate(labels.tolist()):  # the definition, item by item
        want = 0.0 if label == 3 else -float(logp[i, [1, 2, 0][label]].detach())
        assert float(got[i]) == pytest.approx(want, abs=1e-6)
    # the loss whose size the head learns: squared error plus the weighted cross-entropy
    s, err = torch.randn(9), torch.rand(9)
    want = (0.5 * ((err + 0.5 * got) * torch.exp(-s) + s)).mean()
    assert float(loss_nll(err + 0.5 * got, s)) == pytest.approx(float(want), rel=1e-6)


def test_class_index():
    assert class_index([2, 0], 4).tolist() == [1, -1, 0, -1]
    assert class_index(None, 3).tolist() == [0, 1, 2]


def _heteroscedastic(n=1024, seed=0):
    gen = torch.Generator().manual_seed(seed)
    old, side = torch.randn(n, 8, generator=gen), torch.randn(n, 4, generator=gen)
    noisy = old[:, 0] > 0  # half of the items get a noisy target
    new = old[:, :6] * 0.5 + torch.randn(n, 6, generator=gen) * (0.05 + 1.0 * noisy[:, None])
    return old, side, new, noisy


@pytest.mark.parametrize(("p2c", "detach"), [(0.0, True), (0.5, True), (0.0, False)])
def test_training_learns_which_items_are_uncertain(tmp_path, p2c, detach):
    old, side, new, noisy = _heteroscedastic()
    cfg = UncertaintyTrainingConfig(
        hidden_dim=32,
        p2c_weight=p2c,
        detach_variance=detach,
        optim=OptimConfig(epochs=30, batch_size=128, lr=3e-3, weight_decay=0),
    )
    spec = TransformationSpec(type=KIND, old_dim=8, new_dim=6, side_info_dim=4, hidden_dim=32)
    extra = {}
    if p2c:
        labels = noisy.long()
        extra = dict(labels=labels, classifier=torch.nn.Linear(6, 2), classes=class_index(None, 2))
    model, result = train_uncertainty_transformation(
        cfg,
        cfg.optim,
        old,
        side,
        new,
        spec,
        seed=0,
        device=torch.device("cpu"),
        checkpoint=tmp_path / "ck.pt",
        fingerprint="x",
        desc="t",
        **extra,
    )
    assert "nll" in result.history[-1] and ("p2c" in result.history[-1]) == bool(p2c)
    emb, log_var = predict_with_uncertainty(model, old, side)
    assert log_var[noisy].mean() > log_var[~noisy].mean() + 0.5
    # predicted variance tracks the true error (rank correlation)
    err = ((emb - new) ** 2).mean(1)
    rank = lambda x: torch.argsort(torch.argsort(x)).double()  # noqa: E731
    assert torch.corrcoef(torch.stack([rank(err), rank(log_var)]))[0, 1] > 0.5


def test_training_refuses_plain_kind_and_p2c_without_inputs(tmp_path):
    old, side, new, _ = _heteroscedastic(64)
    cfg = UncertaintyTrainingConfig(hidden_dim=8, optim=OptimConfig(epochs=1, batch_size=32))
    args = dict(
        seed=0, device=torch.device("cpu"), checkpoint=tmp_path / "c.pt", fingerprint="f", desc="d"
    )
    with pytest.raises(ConfigError, match="predicts no uncertainty"):
        train_uncertainty_transformation(
            cfg,
            cfg.optim,
            old,
            side,
            new,
            TransformationSpec(type="fct", old_dim=8, new_dim=6, side_info_dim=4, hidden_dim=8),
            **args,
        )
    cfg = cfg.model_copy(update={"p2c_weight": 1.0})
    with pytest.raises(ConfigError, match="p2c_weight"):
        train_uncertainty_transformation(
            cfg,
            cfg.optim,
            old,
            side,
            new,
            TransformationSpec(type=KIND, old_dim=8, new_dim=6, side_info_dim=4, hidden_dim=8),
            **args,
        )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    h = _model(3)
    path = tmp_path_factory.mktemp("onnx") / "u.onnx"
    diff = export_onnx(h, path, old_dim=8, side_info_dim=4)
    assert diff is not None and diff <= 1e-5
    return h, path


def test_onnx_has_the_log_variance_output(exported):
    import onnxruntime as ort

    h, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["new_embedding", UNCERTAINTY_OUTPUT]
    old, side = torch.randn(11, 8), torch.randn(11, 4)
    emb, log_var = session.run(None, {"old_embedding": old.numpy(), "side_info": side.numpy()})
    with torch.no_grad():
        want_e, want_v = h.predict(old, side)
    np.testing.assert_allclose(emb, want_e.numpy(), atol=1e-5)
    np.testing.assert_allclose(log_var, want_v.numpy(), atol=1e-5)


def test_upgrade_batch_writes_the_uncertainty_column(exported):
    h, path = exported
    runner = OnnxChainRunner([path])
    assert runner.predicts_uncertainty and runner.new_dim == 6
    gen = np.random.default_rng(0)
    old, side = gen.standard_normal((10, 8), np.float32), gen.standard_normal((10, 4), np.float32)
    emb = np.zeros((10, 8), np.float32)
    emb[:] = old
    batch = make_batch(
        [f"i{k}" for k in range(10)], emb, model_version=1, side_info=side, side_info_version="s/1"
    )
    plan = BatchPlan("fam", 2, 6, {(1, "s/1"): GroupRunner(runner, "1 -> 2")})
    assert plan.uncertainty
    out = upgrade_batch(batch, plan)
    assert out.schema.field(gallery_schema.UNCERTAINTY).type == pa.float32()
    with torch.no_grad():
        want_e, want_v = h.predict(torch.tensor(old), torch.tensor(side))
    np.testing.assert_allclose(
        out.column(gallery_schema.UNCERTAINTY).to_numpy(), want_v.numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        gallery_schema.vectors(out, gallery_schema.EMBEDDING, "t"), want_e.numpy(), atol=1e-5
    )
    # rows already at the target keep their stored value; plain embeddings of version 2: null
    mixed = (
        pa.concat_tables([pa.Table.from_batches([out]), pa.Table.from_batches([out])])
        .combine_chunks()
        .to_batches()[0]
    )
    mixed = mixed.set_column(
        mixed.schema.get_field_index(gallery_schema.MODEL_VERSION),
        gallery_schema.MODEL_VERSION,
        pa.array([2] * 20, pa.int32()),
    )
    plan2 = BatchPlan("fam", 2, 6, {(2, "s/1"): GroupRunner(None, "already")})
    again = upgrade_batch(mixed, plan2)
    assert again.column(gallery_schema.UNCERTAINTY).equals(mixed.column(gallery_schema.UNCERTAINTY))


@pytest.fixture(scope="module")
def pg_server():
    yield from serve_embedded()


@pytest.mark.services
def test_upgrade_into_pgvector_stores_the_uncertainty(exported, pg_server):
    """A pgvector gallery upgraded through the uncertainty-aware graph holds each row's
    log-variance (the column a backfill plan orders by), as a Parquet gallery does."""
    h, path = exported
    rows = synthetic_rows(50, seed=4)
    url = pg_server.gallery()
    load_rows(url, rows.ids, rows.old, rows.side, side_ref=SIDE)
    plan = UpgradePlan.from_onnx(FAMILY, 2, {(1, SIDE): [path]}, threads=1)
    source = Source.open(url)
    try:
        upgrade_to_pg(source, PgLocation.parse(url), plan, batch_size=16, index=False)
    finally:
        source.close()
    table = read_all(url)
    order = np.argsort(rows.ids)
    with torch.no_grad():
        want_e, want_v = h.predict(torch.tensor(rows.old[order]), torch.tensor(rows.side[order]))
    np.testing.assert_allclose(
        table.column(gallery_schema.UNCERTAINTY).to_numpy(), want_v.numpy(), atol=1e-5
    )
    np.testing.assert_allclose(matrix(table, gallery_schema.EMBEDDING), want_e.numpy(), atol=1e-5)


def test_detached_variance_leaves_the_trunk_to_the_regression():
    old, side, new, _ = _heteroscedastic(64)
    grads = {}
    for detach in (True, False):
        h = _model(1).train()
        h.detach_variance = detach
        pred, log_var = h.predict(old, side)
        gaussian_nll(pred, log_var, new, beta=1.0).backward()
        grads[detach] = h.old_proj[0].weight.grad.clone()
    h = _model(1).train()
    (0.5 * ((h(old, side) - new) ** 2).mean(1)).mean().backward()
    torch.testing.assert_close(grads[True], h.old_proj[0].weight.grad)
    assert not torch.allclose(grads[False], h.old_proj[0].weight.grad)


def test_flavor_saves_and_serves_the_uncertainty_kind(tmp_path):
    import onnxruntime as ort

    from fct_registry.registry.flavor import load_local, save_model

    h = _model(4)
    spec = {"kind": "transformation", "type": KIND, "from": 1, "to": 2, "old_dim": 8,
            "new_dim": 6, "side_info_dim": 4, "hidden_dim": 16}  # fmt: skip
    save_model(h, tmp_path / "m", spec=spec)
    graph = next((tmp_path / "m").rglob("*.onnx"))
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["new_embedding", UNCERTAINTY_OUTPUT]
    loaded = load_local(tmp_path / "m")
    old, side = torch.randn(3, 8), torch.randn(3, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(old, side), h(old, side))
    assert chain_predicts_uncertainty(loaded)


def _mislabelled_group(n=1024, seed=0):
    """Every target has the same noise, so the squared error cannot tell items apart; the new
    classifier (the sign of the target's first dimension) matches the labels of one group and
    is right only half the time on the other (``old[:, 1] > 0``, random labels)."""
    gen = torch.Generator().manual_seed(seed)
    old, side = torch.randn(n, 8, generator=gen), torch.randn(n, 4, generator=gen)
    new = old[:, :6] * 0.5 + torch.randn(n, 6, generator=gen) * 0.3
    hard = old[:, 1] > 0
    coin = torch.randint(0, 2, (n,), generator=gen)
    labels = torch.where(hard, coin, (old[:, 0] > 0).long())
    clf = torch.nn.Linear(6, 2)
    with torch.no_grad():
        clf.weight.zero_()
        clf.weight[:, 0] = torch.tensor([-8.0, 8.0])
        clf.bias.zero_()
    return old, side, new, labels, clf, hard


def test_point_to_cluster_makes_the_head_rank_items_the_classifier_gets_wrong(tmp_path):
    old, side, new, labels, clf, hard = _mislabelled_group()
    spec = TransformationSpec(type=KIND, old_dim=8, new_dim=6, side_info_dim=4, hidden_dim=32)
    gaps = {}
    for weight in (0.0, 1.0):
        cfg = UncertaintyTrainingConfig(
            hidden_dim=32,
            p2c_weight=weight,
            optim=OptimConfig(epochs=30, batch_size=128, lr=3e-3, weight_decay=0),
        )
        model, _ = train_uncertainty_transformation(
            cfg, cfg.optim, old, side, new, spec, seed=0, device=torch.device("cpu"),
            checkpoint=tmp_path / f"w{weight}.pt", fingerprint="x", desc="t",
            labels=labels, classifier=clf, classes=class_index(None, 2),
        )  # fmt: skip
        _, log_var = predict_with_uncertainty(model, old, side)
        gaps[weight] = float(log_var[hard].mean() - log_var[~hard].mean())
    # squared error alone: the groups look alike; with the cross-entropy the head tells them apart
    assert abs(gaps[0.0]) < 0.3 and gaps[1.0] > 0.5 and gaps[1.0] > 3 * abs(gaps[0.0])


@pytest.mark.parametrize("trains_embedding", [False, True])
def test_point_to_cluster_reaches_the_embedding_only_when_asked(trains_embedding):
    old, side, new, labels, clf, _ = _mislabelled_group(64)
    cfg = UncertaintyTrainingConfig(p2c_weight=1.0, p2c_trains_embedding=trains_embedding)
    classes = class_index(None, 2)
    h = _model(1).train()
    h.detach_variance = True
    pred, log_var = h.predict(old, side)
    err = (pred - new).square().mean(1)
    p2c = point_to_cluster(pred, labels, clf, classes)
    align = err + cfg.p2c_weight * (p2c if cfg.p2c_trains_embedding else p2c.detach())
    loss_nll(align, log_var, cfg.beta).backward()
    plain = _model(1).train()
    (0.5 * ((plain(old, side) - new) ** 2).mean(1)).mean().backward()
    same = torch.allclose(h.old_proj[0].weight.grad, plain.old_proj[0].weight.grad, atol=1e-6)
    assert same != trains_embedding
