"""``fct resolve`` and ``fct graph`` through ``fct_registry.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from fct_registry.cli import main
from tests.resolver.conftest import register
from tests.resolver.records import chain, default_family


def test_resolve_json_returns_the_chain_and_the_deciding_numbers(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    register(store, [*default_family(direct=78.0, first=90.0, second=85.0)])
    assert main(["resolve", "fashion@1", "fashion@3", "--json", "--tracking-uri", store]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"]["path"] == [1, 3] and out["chosen"]["top1"] == 78.0
    assert out["chosen"]["hops"][0]["uri"] == "models:/fashion-transformations/3"
    assert out["alternatives"][0]["path"] == [1, 2, 3]
    assert out["alternatives"][0]["top1"] == pytest.approx(76.5)
    assert out["alternatives"][0]["measured"] is False
    assert out["side_info"] == "fashion-side-info/1"
    assert out["graph"]["mlflow_calls"] == 2 and out["graph"]["pages"] == 1
    assert out["graph"]["resolve_ms"] < 1000


def test_resolve_table(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    register(
        store,
        [*default_family(direct=70.0), chain(5, [1, 2], 1, 3, 81.0)],
        aliases={"production": 3},
    )
    assert main(["resolve", "fashion@1", "fashion@production", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert (
        "* 1->2->3" in out and "81.00" in out and "recorded chain fashion-transformations/5" in out
    )
    assert "fashion-transformations/1" in out and "90.00" in out  # each hop's measured top-1
    assert "loaded with 2 MLflow calls (1 search page)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fashion@1", "fashion@7"], "error: unknown version 7 of fashion; known: 1, 2, 3\n"),
        (["fahsion@1", "fahsion@3"], "error: unknown family 'fahsion'; known: fashion "),
        (
            ["fashion@3", "fashion@1"],
            "error: fashion@3 is newer than fashion@1 and there is no backward transformation",
        ),
        (["fashion@1", "shoes@3"], "error: FROM and TO must be versions of one family"),
        (["fashion@1", "fashion@3", "--record"], "error: --record stores a measurement"),
        (["fashion@1", "fashion"], "error: bad version reference 'fashion'"),
        (
            ["fashion@1", "fashion@3", "--side-info", "fashion-side-info/2"],
            "error: unknown side-info extractor fashion-side-info/2; known: fashion-side-info/1",
        ),
    ],
)
def test_resolve_errors_exit_2_with_the_fix(
    store: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    register(store, default_family())
    assert main(["resolve", *argv, "--tracking-uri", store]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_graph_draws_and_logs_to_mlflow(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(store, [*default_family(), chain(5, [1, 2], 1, 3, 81.0)], aliases={"production": 3})
    png = tmp_path / "graph.png"
    argv = [
        "graph",
        "fashion",
        "--out",
        str(png),
        "--log-to-mlflow",
        "--tracking-uri",
        store,
        "--highlight",
        "fashion@1",
        "fashion@3",
    ]
    assert main(argv) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    out = capsys.readouterr().out
    run_id = out.split("logged to MLflow run ")[1].split()[0]
    client = MlflowClient()
    names = {a.path for a in client.list_artifacts(run_id, "resolver")}
    assert names == {
        "resolver/compatibility_graph.png",
        "resolver/compatibility_heatmap.png",
        "resolver/compatibility_graph.json",
    }
    assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "fct-fashion"
    local = client.download_artifacts(run_id, "resolver/compatibility_graph.json", str(tmp_path))
    data = json.loads(Path(local).read_text())
    assert [t["top1"] for t in data["transformations"]] == [90.0, 88.0, 78.0, 70.0]
    assert data["chains"][0]["hops"] == [1, 2]
    assert client.get_run(run_id).data.metrics["transformations"] == 4


def test_missing_production_alias_names_the_gate(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    register(store, [*default_family(direct=70.0)])
    argv = ["resolve", "fashion@1", "fashion@production", "--tracking-uri", store]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no alias 'production'" in err and "fct gate --bootstrap --promote" in err
    assert "MlflowClient" not in err
