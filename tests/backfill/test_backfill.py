"""Backfill plans and runs: order, budget, in-place rewrite, idempotence, kill and resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fct_registry.backfill import (
    BackfillError,
    BackfillPlan,
    BackfillPlanError,
    Budget,
    item_images,
    make_plan,
    run_backfill,
    stored_embeddings,
)
from fct_registry.backfill.run import DEFAULT_BATCH_SIZE, PROGRESS_DIR
from fct_registry.cli import backfill as parser_side
from fct_registry.cli import main
from fct_registry.errors import ConfigError, DataError
from fct_registry.evaluation.backfill import ORDERS
from fct_registry.gallery import Gallery
from fct_registry.gallery import schema as gallery_schema
from tests.backfill.conftest import N, write_gallery
from tests.cli.test_main import HEAVY, _fct

ROOT = Path(__file__).resolve().parents[2]


def rows(gallery: Path) -> dict[str, dict]:
    """Every row by id (checksums verified by the reader)."""
    out = {}
    for batch in Gallery.open(gallery).batches():
        emb = gallery_schema.vectors(batch, gallery_schema.EMBEDDING, "t")
        cols = batch.to_pydict()
        for k, item in enumerate(cols[gallery_schema.ID]):
            out[item] = {c: cols[c][k] for c in cols if c != gallery_schema.EMBEDDING} | {
                "emb": emb[k]
            }
    return out


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_budget_parsing():
    assert Budget.parse("10%").rows(40) == 4
    assert Budget.parse("12.5%").rows(40) == 5
    assert Budget.parse("7").rows(40) == 7
    for bad in ("ten", "-3", "120%", "5%%"):
        with pytest.raises(ConfigError, match="budget"):
            Budget.parse(bad)


def test_uncertainty_plan_orders_candidates(setup, tmp_path):
    g = Gallery.open(setup.gallery)
    plan = make_plan(g, Budget.parse("25%"), "uncertainty", images=str(setup.images))
    cand = [i for i in range(N) if not np.isnan(setup.uncertainty[i])]
    want = sorted(cand, key=lambda i: (-setup.uncertainty[i], i))[:10]
    assert plan.ids == tuple(setup.ids[i] for i in want)
    assert plan.scores == pytest.approx([float(setup.uncertainty[i]) for i in want])
    assert plan.candidates == N - 2
    plan.write(tmp_path / "p.json")
    assert BackfillPlan.read(tmp_path / "p.json") == plan
    assert make_plan(g, Budget.parse("1000"), "uncertainty").ids.__len__() == N - 2


def test_random_and_oracle_plans(setup):
    g = Gallery.open(setup.gallery)
    a = make_plan(g, Budget.parse("5"), "random", seed=1)
    assert a == make_plan(g, Budget.parse("5"), "random", seed=1)
    assert a.ids != make_plan(g, Budget.parse("5"), "random", seed=2).ids
    assert len(set(a.ids)) == 5 and "imgs-0000003" not in a.ids
    assert list(a.scores) == sorted(a.scores, reverse=True)

    def embed(ids):
        return setup.embed(item_images(ids, setup.images))

    o = make_plan(
        g, Budget.parse("6"), "oracle", embed=embed,
        transformed=lambda ids: stored_embeddings(g, ids),
    )  # fmt: skip
    err = ((setup.embeddings - setup.new) ** 2).mean(1)
    cand = [i for i in range(N) if not np.isnan(setup.uncertainty[i])]
    want = sorted(cand, key=lambda i: -err[i])[:6]
    assert o.ids == tuple(setup.ids[i] for i in want)
    with pytest.raises(BackfillPlanError, match="oracle"):
        make_plan(g, Budget.parse("6"), "oracle")


def test_plain_gallery_has_no_uncertainty(setup, tmp_path):
    write_gallery(
        tmp_path / "plain", setup.ids, setup.embeddings, setup.embeddings[:, :4], None, None
    )
    g = Gallery.open(tmp_path / "plain")
    with pytest.raises(BackfillPlanError, match="uncertainty-aware"):
        make_plan(g, Budget.parse("10%"), "uncertainty")
    assert len(make_plan(g, Budget.parse("10%"), "random").ids) == 4


def test_item_images_lookup(setup):
    from safetensors.torch import load_file

    images = load_file(str(setup.images))["images"]
    got = item_images(["imgs-0000007", "x-0000002", "imgs-0000007"], setup.images)
    assert got.equal(images[[7, 2, 7]])
    with pytest.raises(DataError, match="beyond"):
        item_images(["imgs-0000099"], setup.images)
    with pytest.raises(DataError, match="row number"):
        item_images(["abc"], setup.images)


def test_run_rewrites_planned_rows_in_place(setup, tmp_path):
    g = Gallery.open(setup.gallery)
    before = rows(setup.gallery)
    old_shards = [s.path for s in g.manifest.shards]
    plan = make_plan(g, Budget.parse("20%"), images=str(setup.images))
    report = run_backfill(plan, setup.embed, model_id="m")
    assert report.shards == 3 and not report.already_complete  # first backfill: every shard
    after = rows(setup.gallery)
    assert set(after) == set(before)
    for item in setup.ids:
        i = setup.ids.index(item)
        if item in plan.ids:
            np.testing.assert_allclose(after[item]["emb"], setup.new[i], atol=1e-5)
            assert (
                after[item][gallery_schema.BACKFILLED] is True
                and after[item][gallery_schema.UNCERTAINTY] is None
            )
        else:
            assert np.array_equal(after[item]["emb"], before[item]["emb"])
            assert after[item][gallery_schema.BACKFILLED] is False
            assert (
                after[item][gallery_schema.UNCERTAINTY] == before[item][gallery_schema.UNCERTAINTY]
            )
        assert after[item][gallery_schema.LABEL] == before[item][gallery_schema.LABEL]
        assert after[item][gallery_schema.SIDE_INFO] == pytest.approx(
            before[item][gallery_schema.SIDE_INFO]
        )
    names = set(files(setup.gallery))
    assert not any(n.startswith(PROGRESS_DIR) for n in names)
    assert not names & set(old_shards)  # the replaced shards are gone
    prov = Gallery.open(setup.gallery).manifest.provenance
    assert prov["backfills"][0]["plan_sha256"] == plan.sha256

    # idempotent: the same plan again changes nothing
    snapshot = files(setup.gallery)
    again = run_backfill(plan, setup.embed, model_id="m")
    assert again.already_complete and files(setup.gallery) == snapshot

    # a second plan skips backfilled rows and rewrites only the shards it touches
    g2 = Gallery.open(setup.gallery)
    second = make_plan(g2, Budget.parse("2"), images=str(setup.images))
    assert not set(second.ids) & set(plan.ids)
    touched = {setup.ids.index(i) // 16 for i in second.ids}
    stale = make_plan(g2, Budget.parse("3"), "random", images=str(setup.images))
    assert run_backfill(second, setup.embed, model_id="m").shards == len(touched)

    # a plan made before that run no longer matches the gallery
    with pytest.raises(BackfillError, match="changed since the plan"):
        run_backfill(stale, setup.embed, model_id="m")


def _cli_run(plan: Path, model: Path, kill: str | None) -> subprocess.CompletedProcess:
    """``fct backfill run`` in a subprocess; with ``kill``, one that SIGKILLs itself there."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    entry = (
        ["-m", "tests.support.kill_at", "fct_registry.backfill.run", kill]
        if kill
        else ["-m", "fct_registry"]
    )
    cmd = [sys.executable, *entry, "backfill", "run", "--plan", str(plan),
           "--model", str(model), "--device", "cpu", "--batch-size", "8"]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("crash", ["batch:0:0", "batch:1:1", "shard:1", "marker:2", "manifest"])
def test_crash_then_resume_in_process(setup, tmp_path, monkeypatch, crash):
    """The fast twin of the SIGKILL test: an exception at each point, then the same call."""
    from fct_registry.backfill import run as backfill_run

    twin = tmp_path / "twin"
    shutil.copytree(setup.gallery, twin)
    plan_a = make_plan(Gallery.open(setup.gallery), Budget.parse("30%"), images=str(setup.images))
    plan_b = make_plan(Gallery.open(twin), Budget.parse("30%"), images=str(setup.images))
    run_backfill(plan_a, setup.embed, model_id="m", batch_size=8)

    def boom(point: str) -> None:
        if point == crash:
            raise KeyboardInterrupt(point)

    monkeypatch.setattr(backfill_run, "_reached", boom)
    with pytest.raises(KeyboardInterrupt):
        run_backfill(plan_b, setup.embed, model_id="m", batch_size=8)
    monkeypatch.undo()
    report = run_backfill(plan_b, setup.embed, model_id="m", batch_size=8)
    assert report.already_complete == (crash == "manifest")
    assert files(twin) == files(setup.gallery)


@pytest.mark.slow  # three CLI processes per case: minutes on a loaded 2-core machine
@pytest.mark.parametrize("kill", ["batch:1:1", "marker:0", "manifest"])
def test_sigkill_then_resume_is_identical_to_an_uninterrupted_run(setup, tmp_path, kill):
    twin = tmp_path / "twin"
    shutil.copytree(setup.gallery, twin)
    plans = {}
    for name, root in (("a", setup.gallery), ("b", twin)):
        plan = make_plan(Gallery.open(root), Budget.parse("30%"), images=str(setup.images))
        plan.write(tmp_path / f"{name}.json")
        plans[name] = plan
    assert plans["a"].sha256 == plans["b"].sha256  # one job: same content, other location

    whole = _cli_run(tmp_path / "a.json", setup.model, None)
    assert whole.returncode == 0, whole.stderr
    before = rows(twin)
    killed = _cli_run(tmp_path / "b.json", setup.model, kill)
    assert killed.returncode == -9, killed.stderr
    if kill != "manifest":  # readers still see the old gallery, untouched
        assert {k: v["emb"].tolist() for k, v in rows(twin).items()} == {
            k: v["emb"].tolist() for k, v in before.items()
        }
    resumed = _cli_run(tmp_path / "b.json", setup.model, None)
    assert resumed.returncode == 0, resumed.stderr
    assert files(twin) == files(setup.gallery)


def test_cli_plan_and_errors(setup, tmp_path, capsys):
    out = tmp_path / "p.json"
    code = main(["backfill", "plan", "--gallery", str(setup.gallery), "--budget", "10%",
                 "--images", str(setup.images), "--out", str(out)])  # fmt: skip
    assert code == 0 and "planned 4 of 38" in capsys.readouterr().out
    assert json.loads(out.read_text())["policy"] == "uncertainty"
    assert main(["backfill", "run", "--plan", str(tmp_path / "missing.json")]) == 2
    assert "fct backfill plan" in capsys.readouterr().err
    assert main(["backfill", "plan", "--gallery", str(setup.gallery), "--budget", "x"]) == 2


def test_parser_copies_match_the_library():
    assert parser_side.DEFAULT_BATCH_SIZE == DEFAULT_BATCH_SIZE
    assert set(parser_side.POLICIES) == set(ORDERS.names())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--gallery", "g", "--budget", "ten"], "neither a percentage"),
        (["plan", "--gallery", "g", "--budget", "101%"], "within 0..100%"),
        (["plan", "--gallery", "missing", "--budget", "5"], "--gallery file missing"),
        (["run", "--plan", "missing.json"], "fct backfill plan"),
        (["run", "--plan", "p.json", "--batch-size", "0"], "--batch-size"),
        (["run", "--plan", "p.json"], "no tracking store"),  # the registry is needed, absent
        (["log", "--metrics", "missing.json"], "--metrics file missing.json"),
        (["log", "--metrics", "p.json"], "no tracking store"),
    ],
)
def test_usage_errors_come_before_heavy_imports(argv, message, tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "p.json").write_text("{}")
    probe = _fct("backfill", *argv, cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert probe.returncode == 2
    errors = [line for line in probe.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], probe.stderr[-2000:]
    heavy = [m for m in HEAVY if re.search(rf"\|\s+{m}$", probe.stderr, re.M)]
    assert heavy == [], f"{argv} imported {heavy} before failing"
    assert not (tmp_path / "mlflow.db").exists()
