"""2-process DDP (gloo, CPU) ends with the single-process weights for a fixed seed and batch,
from an in-memory split and from a split streamed from image files (each rank reads only its
share of every global batch)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from fct_registry.config import OptimConfig, SideInfoConfig, TransformationConfig, VersionConfig
from fct_registry.data.prepared import TensorSplit
from fct_registry.model_specs import EmbeddingSpec, SideInfoSpec, TransformationSpec
from fct_registry.training.distributed import DistContext, GlobalBatchNorm, init_from_env, shutdown

SPEC_EMB = EmbeddingSpec(
    backbone="smallcnn",
    backbone_kwargs={"width": 4},
    in_channels=1,
    embedding_dim=8,
    num_classes=4,
    mean=[0.5],
    std=[0.3],
)
SPEC_SIDE = SideInfoSpec(
    backbone="smallcnn",
    backbone_kwargs={"width": 4},
    in_channels=1,
    dim=8,
    projection_dim=8,
    mean=[0.5],
    std=[0.3],
)
SPEC_H = TransformationSpec(type="fct", old_dim=6, new_dim=5, side_info_dim=3, hidden_dim=16)
OPTIM = OptimConfig(epochs=2, batch_size=16, lr=1e-2, weight_decay=0.0, max_batches=3)


def _data():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (64, 1, 12, 12), generator=gen, dtype=torch.uint8)
    return (
        TensorSplit(images, torch.arange(64) % 4),
        torch.randn(64, 6, generator=gen),
        torch.randn(64, 3, generator=gen),
        torch.randn(64, 5, generator=gen),
    )


def _stream_split(tree: Path):
    from fct_registry.data.decode import ImageTransform
    from fct_registry.data.image_sources import open_source
    from fct_registry.data.loader import ImageDataset
    from fct_registry.data.splits import StreamSplit

    dataset = ImageDataset(open_source(str(tree)), ImageTransform(1, 28, 28))
    return StreamSplit(dataset, workers=0)


def _train(kind: str, workdir: Path) -> dict[str, torch.Tensor]:
    from fct_registry.training.classifier import train_classifier
    from fct_registry.training.contrastive import train_side_info
    from fct_registry.training.transformation import train_transformation

    ctx, device = init_from_env(torch.device("cpu"))
    split, old, side, new = _data()
    checkpoint = workdir / f"{kind}-{ctx.world_size}.pt"  # shared by ranks
    if kind.endswith("-stream") or kind.endswith("-tree"):
        # the same PNG tree, streamed from files or held in memory (a TensorSplit)
        stream = _stream_split(workdir / "tree")
        images = torch.stack([stream.dataset[i][0] for i in range(len(stream))])
        split = stream if kind.endswith("-stream") else TensorSplit(images, stream.labels)
        kind = kind.rsplit("-", 1)[0]
    common = {
        "seed": 1,
        "device": device,
        "fingerprint": "x",
        "checkpoint": checkpoint,
    }
    if kind == "classifier":
        model, _ = train_classifier(VersionConfig(optim=OPTIM), split, SPEC_EMB, desc="c", **common)
    elif kind == "simclr":
        cfg = SideInfoConfig(optim=OPTIM, temperature=0.5)
        model, _ = train_side_info(cfg, split, SPEC_SIDE, desc="side-info", **common)
    else:
        cfg = TransformationConfig.model_validate({"from": 1, "to": 2, "optim": OPTIM})
        model, _ = train_transformation(cfg, old, side, new, SPEC_H, desc="h", **common)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


class _Interrupted(Exception):
    pass


def _worker(
    rank: int, world: int, port: int, kind: str, workdir: str, crash_at_epoch: int | None = None
) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    if crash_at_epoch is not None:  # both ranks die when that epoch starts (after a checkpoint)
        from fct_registry.training import loop

        batches = loop.epoch_batches

        def crashing(n, batch_size, seed, epoch, max_batches):
            if epoch == crash_at_epoch:
                raise _Interrupted
            return batches(n, batch_size, seed, epoch, max_batches)

        loop.epoch_batches = crashing
    try:
        save_file(_train(kind, Path(workdir)), f"{workdir}/{kind}-rank{rank}.safetensors")
    except _Interrupted:
        pass  # an interrupted run: only its checkpoint is left
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["classifier", "simclr", "transformation"])
def test_two_process_ddp_matches_single_process(kind, tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    single = _train(kind, tmp_path)
    mp.spawn(_worker, args=(2, _free_port(), kind, str(tmp_path)), nprocs=2, join=True)
    rank0 = load_file(str(tmp_path / f"{kind}-rank0.safetensors"))
    rank1 = load_file(str(tmp_path / f"{kind}-rank1.safetensors"))
    assert rank0.keys() == single.keys()
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        if value.is_floating_point():
            assert torch.allclose(rank0[key], value, atol=2e-4, rtol=1e-3), key
        else:
            assert torch.equal(rank0[key], value), key


@pytest.mark.parametrize("kind", ["classifier", "simclr"])
def test_streamed_split_trains_the_in_memory_bits_also_under_ddp(kind, tmp_path, monkeypatch):
    """Streaming a lossless PNG tree gives the in-memory split's weights bit for bit (same index
    batches, same augmentation draws), in one process and with 2 ranks each reading only half
    of every global batch (augmentations drawn for the global batch and sliced)."""
    from tests.data.images import write_imagefolder

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    write_imagefolder(tmp_path / "tree", n=64, classes=4)
    in_memory = _train(f"{kind}-tree", tmp_path)
    streamed = _train(f"{kind}-stream", tmp_path)
    for key, value in in_memory.items():
        assert torch.equal(streamed[key], value), key
    ranks = {}
    for mode in ("tree", "stream"):
        mp.spawn(_worker, args=(2, _free_port(), f"{kind}-{mode}", str(tmp_path)), nprocs=2)
        for rank in (0, 1):
            ranks[mode, rank] = load_file(str(tmp_path / f"{kind}-{mode}-rank{rank}.safetensors"))
    for key in in_memory:
        assert torch.equal(ranks["stream", 0][key], ranks["stream", 1][key]), key
        assert torch.equal(ranks["stream", 0][key], ranks["tree", 0][key]), key


def test_ddp_resume_after_interruption_matches_single_process(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    single = _train("transformation", tmp_path / "single")
    work = tmp_path / "ddp"
    work.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), "transformation", str(work), 1), nprocs=2)
    assert not (work / "transformation-rank0.safetensors").exists()  # it died after epoch 1
    mp.spawn(_worker, args=(2, _free_port(), "transformation", str(work)), nprocs=2)
    resumed = load_file(str(work / "transformation-rank0.safetensors"))
    for key, value in single.items():
        assert torch.allclose(resumed[key].float(), value.float(), atol=2e-4, rtol=1e-3), key


def test_global_batchnorm_is_plain_batchnorm_in_one_process():
    x = torch.randn(10, 3, 4, 4)
    ref = torch.nn.BatchNorm2d(3)
    mine = GlobalBatchNorm(3)
    assert torch.allclose(ref(x), mine(x), atol=1e-6)


def test_shard_and_batch_divisibility():
    ctx = DistContext(rank=1, world_size=2)
    assert ctx.shard(torch.arange(8)).tolist() == [4, 5, 6, 7]
    from fct_registry.errors import ConfigError

    with pytest.raises(ConfigError, match="not divisible by the 2 training processes"):
        ctx.check_batch(15)
