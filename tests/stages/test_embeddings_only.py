"""A family defined by embedding tables only: no images, no model files, any modality.

The generated data has a known structure: items of 10 classes have a 24-d latent vector; the
new version sees all of it (a random 32-d linear map), the old one only its first 8 dimensions
(16-d) and the side-info dimensions 8-19 (12-d). So old + side-info explain most, not all, of the
new space, and an FCT transformation should close most of the top-1 gap. The family trains,
evaluates, registers, upgrades a gallery, searches it and gates, all from the tables.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from safetensors.numpy import save_file

from tests.conftest import ROOT

FAMILY = "tables"
LATENT, CLASSES = 24, 10


def _latent(n: int, rng: np.random.Generator, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, CLASSES, n)
    return centres[labels] + 0.9 * rng.normal(size=(n, LATENT)), labels


def write_parquet(path: Path, ids: list, vectors, labels) -> None:
    columns = {
        "id": pa.array(ids),
        "vector": pa.array([[float(x) for x in v] for v in vectors], pa.list_(pa.float32())),
    }
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    pq.write_table(pa.table(columns), path)


def write_tables(root: Path, train: int = 2000, test: int = 600, seed: int = 0) -> dict:
    """Tables of versions 1 (old, Parquet, int ids), 2 (new, Parquet, string ids, rows shuffled)
    and the side-info (safetensors); returns the params that declare them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, LATENT))
    maps = {
        "new": rng.normal(size=(LATENT, 32)),
        "old": rng.normal(size=(8, 16)),
        "side": rng.normal(size=(12, 12)),
    }
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, str]] = {"v1": {}, "v2": {}, "side": {}}
    offset = 0
    for split, n in (("train", train), ("test", test)):
        x, y = _latent(n, rng, centres)
        ids = np.arange(offset, offset + n)
        offset += n
        old, new, side = x[:, :8] @ maps["old"], x @ maps["new"], x[:, 8:20] @ maps["side"]
        write_parquet(root / f"v1-{split}.parquet", ids.tolist(), old, y)
        shuffle = rng.permutation(n)  # another row order: the stage aligns rows by id
        write_parquet(
            root / f"v2-{split}.parquet", [str(i) for i in ids[shuffle]], new[shuffle], y[shuffle]
        )
        save_file(
            {"id": ids.astype(np.int64), "vector": side.astype(np.float32)},
            str(root / f"side-{split}.safetensors"),
        )
        for key, name in (("v1", "v1-{}.parquet"), ("v2", "v2-{}.parquet")):
            out[key][split] = str(root / name.format(split))
        out["side"][split] = str(root / f"side-{split}.safetensors")
    return {
        "family": FAMILY,
        "device": "cpu",
        "side_info": {"source": {"embeddings": out["side"]}, "dim": 12},
        "versions": {
            1: {"source": {"embeddings": out["v1"]}, "embedding_dim": 16},
            2: {"source": {"embeddings": out["v2"]}, "embedding_dim": 32},
        },
        "transformations": {
            "v1_to_v2": {
                "from": 1,
                "to": 2,
                "kind": "fct",
                "hidden_dim": 128,
                "optim": {"epochs": 25, "batch_size": 200, "lr": 0.003, "weight_decay": 0.0},
            }
        },
        "evaluation": {"bootstrap_resamples": 200},
    }


def fct(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fct_registry", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The family trained, evaluated and registered, as a user would with `dvc repro`."""
    from fct_registry.config import parse_params
    from fct_registry.layout import Layout
    from fct_registry.registry.register import register_pipeline
    from fct_registry.stages.run_all import run_pipeline

    root = tmp_path_factory.mktemp("embeddings-only")
    raw = write_tables(root / "tables")
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params, layout = parse_params(copy.deepcopy(raw)), Layout(root / "outputs")
    report = run_pipeline(params, layout)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    summary = register_pipeline(params, layout, uri, root=root)
    return {"root": root, "raw": raw, "report": report, "uri": uri, "summary": summary}


def test_family_trains_and_registers_with_no_image_and_no_model(family: dict) -> None:
    from mlflow import MlflowClient

    root, report = family["root"], family["report"]
    old = report["self"]["1"]["top1"]
    new = report["self"]["2"]["top1"]
    upgraded = report["transformations"]["v1_to_v2"]
    assert new > old + 10, (old, new)  # the structure: a real upgrade to make
    assert upgraded["gap_closed_top1"] >= 70.0, upgraded
    # No images and no weights anywhere in the outputs: only the given tables' records.
    outputs = root / "outputs"
    weights = list(outputs.rglob("model.safetensors"))
    assert weights and all("transformations" in p.parts for p in weights), weights
    for folder in (outputs / "models" / "v1", outputs / "models" / "v2", outputs / "side_info"):
        assert sorted(p.name for p in folder.iterdir()) == ["source.json"]
    for stage in ("v1", "v2", "side_info"):  # declared as plots in dvc.yaml: present, empty
        assert (outputs / "history" / f"{stage}.csv").read_text() == "epoch,loss\n"
    info = json.loads((outputs / "data" / "info.json").read_text())
    assert info["dataset"] == "embeddings" and info["test"]["size"] == 600
    client = MlflowClient(family["uri"])
    for name, version in ((FAMILY, 1), (FAMILY, 2), (f"{FAMILY}-side-info", 1)):
        tags = client.get_model_version(name, str(version)).tags
        lineage = json.loads(tags["fct.source"])
        assert lineage["kind"] == "embeddings"
        assert set(lineage["tables"]) == {"train", "test"}
        assert len(lineage["tables"]["test"]["sha256"]) == 64
        assert "fct.onnx_max_abs_diff" not in tags
    assert client.get_model_version(FAMILY, "2").tags["fct.embedding_dim"] == "32"
    # Registering again changes nothing (same tables, same content hash).
    from fct_registry.config import parse_params
    from fct_registry.layout import Layout
    from fct_registry.registry.register import register_pipeline

    again = register_pipeline(
        parse_params(copy.deepcopy(family["raw"])), Layout(outputs), family["uri"], root=root
    )
    assert not any(v.created for v in again.embeddings.values())


def test_gallery_is_upgraded_searched_and_gated(family: dict, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from fct_registry.gallery.tables import gallery_from_tables
    from fct_registry.registry.refs import parse_ref

    root, raw, uri = family["root"], family["raw"], family["uri"]
    env_uri = ["--tracking-uri", uri]
    client = MlflowClient(uri)
    v1, v2 = raw["versions"][1]["source"]["embeddings"], raw["versions"][2]["source"]["embeddings"]
    side = raw["side_info"]["source"]["embeddings"]
    imported = fct(
        "gallery",
        "import",
        "--version",
        f"{FAMILY}@1",
        "--embeddings",
        v1["test"],
        "--side-info",
        side["test"],
        "--out",
        str(tmp_path / "g1"),
        *env_uri,
        cwd=root,
    )
    assert imported.returncode == 0, imported.stderr
    assert "wrote 600 rows" in imported.stdout
    gallery_from_tables(client, parse_ref(f"{FAMILY}@2"), v2["test"], None, tmp_path / "q2")

    resolved = fct("resolve", f"{FAMILY}@1", f"{FAMILY}@2", *env_uri, cwd=root)
    assert resolved.returncode == 0, resolved.stderr
    up = fct(
        "upgrade",
        "--gallery",
        str(tmp_path / "g1"),
        "--to",
        f"{FAMILY}@2",
        "--out",
        str(tmp_path / "g1-to-2"),
        "--no-progress",
        *env_uri,
        cwd=root,
    )
    assert up.returncode == 0, up.stderr
    searches = {}
    for name in ("g1-to-2",):
        found = fct(
            "search",
            "--gallery",
            str(tmp_path / name),
            "--query-gallery",
            str(tmp_path / "q2"),
            "--exclude-self",
            "--json",
            "-k",
            "1",
            cwd=root,
        )
        assert found.returncode == 0, found.stderr
        searches[name] = json.loads(found.stdout)["accuracy"]
    report = family["report"]
    upgraded_top1 = report["transformations"]["v1_to_v2"]["top1"]
    assert abs(searches["g1-to-2"]["top1"] - upgraded_top1) < 1e-6 + 0.5, searches

    plan = fct(
        "backfill",
        "plan",
        "--gallery",
        str(tmp_path / "g1-to-2"),
        "--budget",
        "10%",
        "--policy",
        "random",
        "--out",
        str(tmp_path / "plan.json"),
        cwd=root,
    )
    assert plan.returncode == 0, plan.stderr
    backfill = fct("backfill", "run", "--plan", str(tmp_path / "plan.json"), *env_uri, cwd=root)
    assert backfill.returncode == 2, backfill.stderr
    assert f"version 2 of {FAMILY} was given as embeddings" in backfill.stderr
    assert backfill.stderr.count("\n") == 1, backfill.stderr

    # `fct gate` as CI runs it: its exit status is its verdict, and the verdict its checks'.
    gated = fct(
        "gate",
        "--candidate",
        f"{FAMILY}@2",
        "--baseline",
        f"{FAMILY}@1",
        "--json",
        *env_uri,
        cwd=root,
    )
    verdict = json.loads(gated.stdout)
    statuses = {c["status"] for c in verdict["checks"]}
    for check in verdict["checks"]:
        if check["status"] in ("pass", "fail") and check["bound"] is not None:
            assert (check["status"] == "pass") == (check["measured"] >= check["bound"]), check
    assert gated.returncode == (1 if "fail" in statuses else 0), (gated.stdout, gated.stderr)

    # The gate decides as the numbers say: a reachable bound passes, an unreachable one fails.
    from fct_registry.config import GateRule
    from fct_registry.gate.run import run_gate
    from fct_registry.layout import Layout

    layout = Layout(root / "outputs")
    scores = None
    for fraction, verdict in ((0.8, "pass"), (1.5, "fail")):
        rules = {"r": GateRule(case="upgraded", reference="candidate", fraction=fraction)}
        result = run_gate(f"{FAMILY}@2", f"{FAMILY}@1", rules, layout=layout, tracking_uri=uri)
        scores = result.scores
        expected = scores["upgraded"]["top1"] >= fraction * scores["candidate"]["top1"]
        assert (result.verdict == "pass") == expected
        assert result.verdict == verdict, (fraction, scores)
    assert scores["upgraded"]["top1"] == pytest.approx(upgraded_top1, abs=1e-6)

    # fct evaluate scores the stored vectors as the evaluate stage did.
    from fct_registry.data.prepared import load_prepared
    from fct_registry.layout import load_embeddings

    np.save(tmp_path / "v2.npy", load_embeddings(layout.version_embeddings(2))["test"].numpy())
    np.save(tmp_path / "labels.npy", load_prepared(layout.data, "test").labels.numpy())
    evaluated = fct(
        "evaluate",
        "--query",
        str(tmp_path / "v2.npy"),
        "--query-labels",
        str(tmp_path / "labels.npy"),
        "--leave-one-out",
        "--json",
        cwd=root,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["top1"] == pytest.approx(report["self"]["2"]["top1"])


def test_commands_that_run_a_model_say_there_is_none(family: dict, tmp_path: Path) -> None:
    root, uri = family["root"], family["uri"]
    images = tmp_path / "images.safetensors"  # any images: the refusal does not depend on them
    save_file(
        {"images": np.zeros((2, 1, 8, 8), np.uint8), "labels": np.zeros(2, np.int64)}, str(images)
    )
    embed = fct(
        "embed",
        "--model",
        f"{FAMILY}@2",
        "--images",
        str(images),
        "--out",
        str(tmp_path / "g"),
        "--tracking-uri",
        uri,
        cwd=root,
    )
    assert embed.returncode == 2, embed.stderr
    assert f"version 2 of {FAMILY} was given as embeddings" in embed.stderr
    assert "there is no model to run" in embed.stderr
    assert embed.stderr.count("\n") == 1
    assert not (tmp_path / "g").exists()


# --- bad input: one line naming the fix, exit 2, nothing written --------------------------------


def _bad(root: Path, change) -> tuple[subprocess.CompletedProcess, Path]:
    raw = write_tables(root / "tables", train=60, test=30)
    change(raw, root / "tables")
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    out = root / "outputs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.prepare",
            "--params",
            str(root / "params.yaml"),
            "--outputs",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, out


def _rewrite(path: str, fn) -> None:
    table = pq.read_table(path)
    ids, vectors = table.column("id").to_pylist(), table.column("vector").to_pylist()
    labels = table.column("label").to_pylist()
    ids, vectors, labels = fn(ids, vectors, labels)
    write_parquet(Path(path), ids, vectors, labels)


def _table(raw: dict, version: int, split: str) -> str:
    return raw["versions"][version]["source"]["embeddings"][split]


def _other_ids(raw: dict, _: Path) -> None:
    _rewrite(_table(raw, 2, "train"), lambda i, v, y: ([f"x{k}" for k in i], v, y))


def _duplicate_ids(raw: dict, _: Path) -> None:
    _rewrite(_table(raw, 1, "test"), lambda i, v, y: ([i[0], *i[:-1]], v, y))


def _nan(raw: dict, _: Path) -> None:
    def fn(i, v, y):
        v = [list(x) for x in v]
        v[3][0] = float("nan")
        return i, v, y

    _rewrite(_table(raw, 1, "train"), fn)


def _ragged(raw: dict, _: Path) -> None:
    _rewrite(_table(raw, 2, "test"), lambda i, v, y: (i, [list(v[0])[:-1], *v[1:]], y))


def _declared_width(raw: dict, _: Path) -> None:
    raw["versions"][2]["embedding_dim"] = 64


def _row_count(raw: dict, _: Path) -> None:
    _rewrite(_table(raw, 1, "train"), lambda i, v, y: (i[:-5], v[:-5], y[:-5]))


def _labels_disagree(raw: dict, _: Path) -> None:
    _rewrite(_table(raw, 2, "test"), lambda i, v, y: (i, v, [(c + 1) % CLASSES for c in y]))


SAME_ITEMS = "give every table of a split the same items, one row each"
BAD = {  # the problem, the fix
    "ids that do not match": (_other_ids, "list different ids", SAME_ITEMS),
    "duplicate ids": (_duplicate_ids, "duplicate ids", "give every item one row"),
    "NaN": (_nan, "NaN or infinite values", "fix or drop those rows"),
    "ragged widths": (_ragged, "vectors of different widths", "give every row"),
    "declared width": (_declared_width, "32-d vectors", "set versions.2.embedding_dim: 32"),
    "row counts": (_row_count, "55 rows but", SAME_ITEMS),
    "labels": (_labels_disagree, "labels disagree", "give the same label"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tables_are_refused_before_anything_is_written(case: str, tmp_path: Path) -> None:
    change, problem, fix = BAD[case]
    proc, out = _bad(tmp_path, change)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert problem in proc.stderr and fix in proc.stderr, proc.stderr
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def test_side_info_from_another_extractor_is_refused(family: dict, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    raw = family["raw"]
    tensors = load_file(raw["side_info"]["source"]["embeddings"]["test"])
    other = tmp_path / "other-side.safetensors"  # the same items, another extractor's vectors
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=tensors["vector"].shape).astype(np.float32)
    save_file({"id": tensors["id"], "vector": vectors}, str(other))
    proc = fct(
        "gallery",
        "import",
        "--version",
        f"{FAMILY}@1",
        "--embeddings",
        raw["versions"][1]["source"]["embeddings"]["test"],
        "--side-info",
        str(other),
        "--out",
        str(tmp_path / "g"),
        "--tracking-uri",
        family["uri"],
        cwd=family["root"],
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "comes from another extractor" in proc.stderr
    assert f"pass the side-info that {FAMILY}-side-info/1 gives" in proc.stderr
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r["versions"][1].update(optim={"epochs": 1}), "remove it or remove `source`"),
        (lambda r: r["versions"][2].pop("embedding_dim"), "needs `embedding_dim`"),
        (lambda r: r["versions"].update({3: {}}), "give every version and side_info"),
        (lambda r: r.update(bct={"b": {"old": 1, "new": 2}}), "remove the `bct` section"),
        (lambda r: r.update(backfill={"from": 1, "to": 2}), "set backfill.enabled: false"),
        (lambda r: r["side_info"].update(source={}), "give exactly one source kind"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(change, message: str, tmp_path: Path) -> None:
    from fct_registry.config import parse_params
    from fct_registry.errors import ConfigError

    raw = write_tables(tmp_path, train=20, test=10)
    change(raw)
    with pytest.raises(ConfigError, match=message.replace("`", ".").replace("(", ".")):
        parse_params(raw)


@pytest.mark.slow
def test_text_upgrade_example_runs(tmp_path: Path) -> None:
    """examples/text-upgrade: two sentence encoders built locally, the old index upgraded."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "text-upgrade" / "run.py"),
            "--work",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["new_new_top1"] > summary["old_old_top1"] + 20, summary
    assert summary["upgraded_top1"] > summary["old_old_top1"] + 15, summary
    assert summary["gap_closed_top1"] > 50, summary
    assert "search the upgraded index" in proc.stdout


def test_every_source_kind_has_a_builder() -> None:
    """A kind is a ModelSource field plus a builder of the same name: neither without the other."""
    from fct_registry.config import ModelSource
    from fct_registry.stages.sources import SOURCE_BUILDERS

    assert sorted(ModelSource.model_fields) == SOURCE_BUILDERS.names()
