"""``fct embed --engine ray`` (``upgrade.engines.ray_embed``) against the local engine: the same
gallery files (the manifest differs only in its recorded engine), the same error for a bad
image, and a run interrupted under the local engine finished under Ray."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fct_registry.data.decode import BadImageError, ImageTransform
from fct_registry.data.image_sources import open_source
from fct_registry.gallery.embed_job import EmbedModels, embed_shard, embed_source
from fct_registry.gallery.manifest import MANIFEST
from fct_registry.storage import open_storage
from tests.data.images import write_imagefolder
from tests.support.services import private_ray
from tests.upgrade.conftest import snapshot

ray = pytest.importorskip("ray", reason="Ray Data is not installed (pip install 'ray[data]')")
pytestmark = pytest.mark.slow  # a private local Ray (~20 s to start on two cores)


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    yield from private_ray()


def _models() -> EmbedModels:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 8))
    side = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 4))
    return EmbedModels("tiny", 1, model, side, "tiny-side-info@1", key="tiny models")


def _embed(tree: Path, out: Path, runner=None, on_bad_image="fail"):
    from fct_registry.upgrade.engines.ray_embed import RayShardRunner

    return embed_source(
        open_source(str(tree)),
        open_storage(str(out)),
        _models(),
        ImageTransform(1, 28, 28),
        batch_size=4,
        num_workers=1,
        shard_rows=10,
        row_group_rows=5,
        on_bad_image=on_bad_image,
        runner=RayShardRunner() if runner == "ray" else runner,
    )


def _same_gallery(a: Path, b: Path) -> None:
    files_a, files_b = snapshot(a), snapshot(b)
    manifest_a, manifest_b = (json.loads(f.pop(MANIFEST)) for f in (files_a, files_b))
    assert files_a == files_b  # every shard (and skipped report) byte for byte
    engines = manifest_a["provenance"].pop("engine"), manifest_b["provenance"].pop("engine")
    assert manifest_a == manifest_b and engines == ("local", "ray")


def test_ray_engine_writes_the_local_engines_gallery(tmp_path):
    write_imagefolder(tmp_path / "tree", 35)
    local = _embed(tmp_path / "tree", tmp_path / "local")
    on_ray = _embed(tmp_path / "tree", tmp_path / "ray", "ray")
    assert on_ray.rows == local.rows == 35 and on_ray.shards == 4
    _same_gallery(tmp_path / "local", tmp_path / "ray")


def test_bad_images_under_ray_skip_or_fail_as_locally(tmp_path):
    write_imagefolder(tmp_path / "tree", 25)
    (tmp_path / "tree" / "class-1" / "broken.png").write_bytes(b"\x89PNG not really")
    _embed(tmp_path / "tree", tmp_path / "local", on_bad_image="skip")
    report = _embed(tmp_path / "tree", tmp_path / "ray", "ray", on_bad_image="skip")
    assert [s.id for s in report.skipped] == ["class-1/broken.png"]
    _same_gallery(tmp_path / "local", tmp_path / "ray")
    with pytest.raises(BadImageError, match=r"broken\.png"):
        _embed(tmp_path / "tree", tmp_path / "ray-fail", "ray")


def test_run_interrupted_locally_is_finished_under_ray(tmp_path):
    write_imagefolder(tmp_path / "tree", 35)
    _embed(tmp_path / "tree", tmp_path / "reference")

    def one_shard_then_crash(job, storage, pending):
        index, name, items = pending[0]
        yield index, embed_shard(job, storage, index, name, items)
        raise KeyboardInterrupt  # the process dies after the first shard

    with contextlib.suppress(KeyboardInterrupt):
        _embed(tmp_path / "tree", tmp_path / "out", one_shard_then_crash)
    assert not (tmp_path / "out" / MANIFEST).exists()
    report = _embed(tmp_path / "tree", tmp_path / "out", "ray")
    assert report.resumed_shards == 1 and report.rows == 35
    _same_gallery(tmp_path / "reference", tmp_path / "out")


def test_ray_options_need_engine_ray():
    import argparse

    from fct_registry.commands.embed import _runner
    from fct_registry.errors import ConfigError
    from fct_registry.upgrade.engines.ray_embed import RayShardRunner

    local = argparse.Namespace(engine="local", ray_address=None, actors=None)
    assert _runner(local) is None
    with pytest.raises(ConfigError, match="--actors apply to --engine ray"):
        _runner(argparse.Namespace(engine="local", ray_address=None, actors=2))
    runner = _runner(argparse.Namespace(engine="ray", ray_address=None, actors=2))
    assert isinstance(runner, RayShardRunner) and runner.engine.workers == 2
