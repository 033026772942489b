"""The `backfill` DVC stage on a tiny pipeline run: outputs, switch-off, summary arithmetic."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from fct_registry.backfill import Budget, make_plan, run_backfill
from fct_registry.config import BackfillConfig, parse_params
from fct_registry.data.decode import ImageTransform
from fct_registry.data.image_sources import open_source
from fct_registry.data.prepared import load_prepared
from fct_registry.errors import ConfigError
from fct_registry.gallery import Gallery, open_storage
from fct_registry.gallery import schema as gallery_schema
from fct_registry.gallery.embed_job import EmbedModels, embed_source
from fct_registry.layout import Layout
from fct_registry.models.io import load_model
from fct_registry.registry.onnx_export import export_onnx
from fct_registry.stages.backfill import _restrict, backfill_stage, query_split, summarise
from fct_registry.stages.prepare import prepare_stage
from fct_registry.stages.side_info import side_info_stage
from fct_registry.stages.transformation import transformation_stage
from fct_registry.stages.version import version_stage
from fct_registry.training.embed import embed_images
from fct_registry.upgrade import UpgradePlan, upgrade_gallery
from tests.conftest import needs_fashion, tiny_params


def test_summary_is_paired_over_seeds():
    def seed(u, r, plain, unc):
        curve = lambda a: {"auc_top1": a, "auc_mAP": a / 2}  # noqa: E731
        return {
            "curves": {"uncertainty": curve(u), "random": curve(r), "oracle": curve(u + 1)},
            "transform_only": {
                "plain": {"top1": plain, "mAP": plain},
                "uncertainty": {"top1": unc, "mAP": unc},
            },
        }

    s = summarise({"0": seed(80, 78, 70, 69.5), "1": seed(82, 79, 71, 71)}, BackfillConfig())
    assert s["auc_uncertainty_minus_random"]["top1"]["mean"] == pytest.approx(2.5)
    assert s["auc_uncertainty_minus_random"]["mAP"]["mean"] == pytest.approx(1.25)
    assert s["auc"]["oracle"]["top1"]["mean"] == pytest.approx(82)
    d = s["transform_only_uncertainty_minus_plain"]["top1"]
    assert d["mean"] == pytest.approx(-0.25) and d["n"] == 2
    sd = 0.5 / 2**0.5  # of the differences -0.5 and 0
    assert d["ci95"] == pytest.approx(12.706 * sd / 2**0.5, rel=1e-3)  # t(0.975, 1) sd / sqrt n


def test_switched_off(tmp_path):
    raw = tiny_params()
    raw["backfill"] = {"enabled": False}
    out = tmp_path / "backfill"
    out.mkdir()
    (out / "curves.png").write_bytes(b"from an earlier enabled run")
    metrics = backfill_stage(parse_params(raw), Layout(tmp_path))
    assert metrics == {"enabled": False}
    assert (out / "metrics.json").read_text() == '{\n  "enabled": false\n}\n'  # byte-stable
    assert sorted(p.name for p in out.iterdir()) == ["curves.csv", "metrics.json"]  # no picture
    header = "backfilled,random_top1,uncertainty_top1,oracle_top1,random_mAP,uncertainty_mAP,"
    assert (out / "curves.csv").read_text() == header + "oracle_mAP\n"  # no stale curves
    saved = Layout(tmp_path).backfill_transformation  # DVC's output exists, holding no model
    assert sorted(p.name for p in saved.iterdir()) == ["DISABLED"]
    del raw["backfill"]
    assert backfill_stage(parse_params(raw), Layout(tmp_path)) == {"enabled": False}


def test_unknown_version_is_a_config_error():
    raw = tiny_params()
    raw["backfill"] = {"from": 1, "to": 9}
    with pytest.raises(Exception, match="backfill names version 9"):
        parse_params(raw)


@needs_fashion
@pytest.mark.slow
def test_stage_on_a_tiny_pipeline(tmp_path):
    raw = tiny_params()
    raw["transformations"] = {
        "v1_to_v3_u": {"from": 1, "to": 3, "kind": "fct-uncertainty", "hidden_dim": 16,
                  "optim": {"epochs": 2, "batch_size": 64, "max_batches": 3}},
    }  # fmt: skip
    raw["bct"] = {}
    raw["backfill"] = {
        "from": 1,
        "to": 3,
        "seeds": [0, 1],
        "steps": 4,
        "queries": 100,
        "transformation": {
            "hidden_dim": 16,
            "p2c_weight": 0.1,
            "optim": {"epochs": 2, "batch_size": 64, "max_batches": 3},
        },
    }
    params, layout = parse_params(raw), Layout(tmp_path)
    prepare_stage(params, layout)
    side_info_stage(params, layout)
    for v in (1, 3):
        version_stage(params, layout, v)
    metrics = backfill_stage(params, layout)
    assert metrics["seeds"] == ["0", "1"]
    for policy in ("random", "uncertainty", "oracle"):
        curve = metrics["per_seed"]["0"]["curves"][policy]
        assert curve["fractions"] == [0, 0.25, 0.5, 0.75, 1.0]
    # every policy ends at the new model's own score and starts at the transformed gallery's
    ends = {tuple(metrics["per_seed"]["1"]["curves"][p]["mAP"][i] for p in ("random", "oracle"))
            for i in (0, 4)}  # fmt: skip
    assert all(a == pytest.approx(b) for a, b in ends)
    out = tmp_path / "backfill"
    assert (out / "curves.png").stat().st_size > 0
    lines = (out / "curves.csv").read_text().splitlines()
    assert len(lines) == 1 + 5 and lines[0].startswith("backfilled,random_top1,uncertainty_top1")
    written = json.loads((out / "metrics.json").read_text())
    assert "seconds" not in written
    assert written["family"] == "fashion" and written["recipe"]["p2c_weight"] == 0.1
    # the first seed's uncertainty-aware model is kept for the register stage
    _, kept_spec = load_model(layout.backfill_transformation)
    assert kept_spec["type"] == "fct-uncertainty" and kept_spec["seed"] == 0
    assert (kept_spec["from"], kept_spec["to"]) == (1, 3)

    # The whole operator flow: the transform stage trains the uncertainty-aware kind, its ONNX
    # graph upgrades a v1 gallery (uncertainty column), then plan and run the backfill.
    transformation_stage(params, layout, "v1_to_v3_u")
    h, spec = load_model(layout.transformation("v1_to_v3_u"))
    assert spec["type"] == "fct-uncertainty"
    export_onnx(
        h, tmp_path / "h.onnx", old_dim=spec["old_dim"], side_info_dim=spec["side_info_dim"]
    )
    v1, _ = load_model(layout.version(1))
    v3, _ = load_model(layout.version(3))
    side, _ = load_model(layout.side_info)
    test_file = layout.data / "test.safetensors"
    shape = list(load_prepared(layout.data, "test").images.shape[1:])
    embed_source(
        open_source(str(test_file)), open_storage(tmp_path / "g1"),
        EmbedModels("fashion", 1, v1, side, "side/1", key="v1 side/1"),
        ImageTransform.for_input_shape(shape), shard_rows=128, num_workers=0,
    )  # fmt: skip
    upgrade = UpgradePlan.from_onnx("fashion", 3, {(1, "side/1"): [tmp_path / "h.onnx"]})
    upgrade_gallery(Gallery.open(tmp_path / "g1"), open_storage(tmp_path / "g3"), upgrade)
    g3 = Gallery.open(tmp_path / "g3")
    plan = make_plan(g3, Budget.parse("10%"), images=str(test_file))
    assert len(plan.ids) == 30 and list(plan.scores) == sorted(plan.scores, reverse=True)
    embed = lambda images: embed_images(v3, images, torch.device("cpu")).numpy()  # noqa: E731
    run_backfill(plan, embed, model_id="v3")
    table = pa.concat_tables(
        pa.Table.from_batches([b]) for b in Gallery.open(tmp_path / "g3").batches()
    )
    marked = table.filter(pc.field(gallery_schema.BACKFILLED))
    assert sorted(marked.column(gallery_schema.ID).to_pylist()) == sorted(plan.ids)
    assert marked.column(gallery_schema.UNCERTAINTY).null_count == 30
    assert (
        table.column(gallery_schema.UNCERTAINTY).null_count == 30
    )  # every other row keeps its own


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    from fct_registry.evaluation.backfill_report import t_quantile

    for df in (1, 2, 5, 30):
        assert t_quantile(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-4)
    assert t_quantile(200) == pytest.approx(stats.t.ppf(0.975, 200), rel=0.02)


def test_query_split_and_restricted_orders():
    qry, gal, loo = query_split(10, 3)
    assert not loo and len(qry) == 3 and sorted(qry.tolist() + gal.tolist()) == list(range(10))
    assert torch.equal(query_split(10, 3)[0], qry)  # fixed, whatever the seed
    assert query_split(10, None)[2]
    with pytest.raises(ConfigError, match=r"backfill\.queries"):
        query_split(10, 10)
    order = torch.tensor([4, 0, 3, 1, 2])
    assert _restrict(order, torch.tensor([1, 3, 4])).tolist() == [2, 1, 0]
