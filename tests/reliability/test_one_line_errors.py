"""Inputs that used to end in a traceback (exit 1) now give one line and exit 2: a symbolic link
loop or a self-link in an image folder, a YAML syntax error in ``--params``, and a non-numeric or
object ``.npy`` given to ``fct search --query``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fct_registry.cli import main
from fct_registry.data.image_sources import open_source
from fct_registry.errors import DataError
from tests.upgrade.conftest import TinyRegistry, synthetic_rows, write_gallery


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, (captured.out + captured.err).strip()


def _one_line(rc: int, text: str, *needles: str) -> None:
    assert rc == 2, text
    assert len(text.splitlines()) == 1 and text.startswith("error: "), text
    assert "Traceback" not in text
    for needle in needles:
        assert needle in text, text


# --- symbolic links in an image folder ---------------------------------------------------------


def _loops(root: Path) -> dict[str, Path]:
    """Image folders, each with one bad link: back to a folder above, or to itself."""
    folders = {}
    for kind in ("up", "self-class", "self-top"):
        (root / kind / "cat").mkdir(parents=True)
        folders[kind] = root / kind
    os.symlink("..", root / "up" / "cat" / "loop")
    os.symlink("x.png", root / "self-class" / "cat" / "x.png")
    os.symlink("x.png", root / "self-top" / "x.png")
    return folders


@pytest.mark.parametrize("kind", ["imagefolder", "folder"])
def test_symlink_loops_in_an_image_folder_are_named(tmp_path: Path, kind: str) -> None:
    folders = _loops(tmp_path)
    with pytest.raises(DataError, match=r"up/cat/loop links back to a folder above it"):
        list(open_source(str(folders["up"]), kind).items())
    for name, link in (("self-class", "cat/x.png"), ("self-top", "x.png")):
        with pytest.raises(DataError, match=rf"cannot list .*{link}: Too many levels of symbolic"):
            list(open_source(str(folders[name]), kind).items())


def test_a_link_to_a_sibling_folder_is_not_a_loop(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.png").write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert list(open_source(str(tmp_path), "folder").location.walk()) == ["a/1.png", "b/1.png"]


@pytest.mark.slow
def test_fct_embed_on_a_symlink_loop_is_one_line(
    registry: TinyRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders = _loops(tmp_path / "images")
    for name, needle in (("up", "links back"), ("self-top", "Too many levels of symbolic links")):
        out = tmp_path / f"out-{name}"
        rc, text = _cli(
            ["embed", "--model", "tiny@1", "--images", str(folders[name]), "--out", str(out),
             "--device", "cpu", "--workers", "0", "--tracking-uri", registry.uri],
            capsys,
        )  # fmt: skip
        _one_line(rc, text, needle)


# --- --params with a YAML syntax error ---------------------------------------------------------


@pytest.mark.parametrize("command", ["register", "gate"])
def test_params_with_a_yaml_syntax_error(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  train: [1, 2\n  test: 3\n")
    (tmp_path / "mlflow.db").touch()
    rc, text = _cli(
        [command, "--params", str(params), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        capsys,
    )
    _one_line(rc, text, f"{params} is not valid YAML at line 3, column 7", "fix the syntax")


# --- fct search --query with a file that is not an array of numbers ----------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (np.array([["a", "b"]]), "holds <U1 values, not numbers; save float embeddings"),
        (np.array([{"a": 1}], dtype=object), "is not a readable .npy array of numbers"),
        (None, "is not a readable .npy array of numbers"),  # not a .npy file at all
    ],
)
def test_search_query_that_is_not_numbers(
    tmp_path: Path, content: np.ndarray | None, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = tmp_path / "g"
    write_gallery(gallery, synthetic_rows(10))
    query = tmp_path / "q.npy"
    if content is None:
        query.write_text("not numpy\n")
    else:
        np.save(query, content, allow_pickle=True)
    argv = ["search", "--gallery", str(gallery), "--query", str(query), "--query-version", "1"]
    rc, text = _cli(argv, capsys)
    _one_line(rc, text, f"--query file {query}", needle)


def test_search_query_labels_must_be_integers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = tmp_path / "g"
    write_gallery(gallery, synthetic_rows(10))
    np.save(tmp_path / "q.npy", synthetic_rows(3).old)
    np.save(tmp_path / "labels.npy", np.array([0.5, 1.0, 2.0]))
    rc, text = _cli(
        ["search", "--gallery", str(gallery), "--query", str(tmp_path / "q.npy"),
         "--query-version", "1", "--query-labels", str(tmp_path / "labels.npy")],
        capsys,
    )  # fmt: skip
    _one_line(rc, text, "holds float64 values; save integer class ids")
