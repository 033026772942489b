"""The one training runner: every trainer builds its model with :func:`seeded_model`, writes only
its step and calls :func:`fit` (device moves, DDP under torchrun), which runs
:func:`run_training` (AdamW with warm-up + cosine, bf16 autocast on GPU, checkpoint + resume,
history rows, progress bar).

Batches are drawn from a permutation seeded by ``(seed, epoch)`` and augmentations use a generator
seeded the same way, so a run resumed from its last checkpoint ends with the same weights as an
uninterrupted one. A trainer's ``fetch`` turns the epoch's index batches into what its step reads
(rows of an in-memory split, or images decoded by DataLoader workers: ``data.splits``); with
``checkpoint_every`` a run also checkpoints inside an epoch and resumes by skipping the index
batches already done (never reading them).
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict, Unpack

import torch
from torch import nn
from tqdm import tqdm

from fct_registry.config import OptimConfig
from fct_registry.data.splits import Split, split_batches
from fct_registry.model_specs import ModelSpec
from fct_registry.models.io import build_from_spec
from fct_registry.training.distributed import context, convert_batchnorm

StepFn = Callable[[Any, torch.Generator], tuple[torch.Tensor, dict[str, float]]]
"""One optimisation step: ``(batch, augmentation generator) -> (loss, extra logs)``; the batch is
a tensor of sample indices, or what the trainer's ``fetch`` made of it."""

FetchFn = Callable[[Iterator[torch.Tensor]], Iterable[Any]]

NetStepFn = Callable[[nn.Module, Any, torch.Generator], tuple[torch.Tensor, dict[str, float]]]
"""A trainer's step given the module to call (the DDP wrapper under torchrun, see :func:`fit`):
``(net, batch, generator) -> (loss, extra logs)``."""


class RunArgs(TypedDict):
    """The keywords every trainer takes: where one training run checkpoints and what it logs."""

    seed: int
    device: torch.device
    checkpoint: Path
    fingerprint: str  # a hash of the config: a checkpoint of another config is not resumed
    desc: str
    checkpoint_every: NotRequired[int | None]  # also checkpoint inside an epoch


@dataclass
class LoopResult:
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0


def epoch_batches(
    n: int, batch_size: int, seed: int, epoch: int, max_batches: int | None
) -> Iterator[torch.Tensor]:
    """Index batches of one epoch: a seeded permutation, the last partial batch dropped
    (batch-norm needs > 1 sample)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen)
    count = max(1, n // batch_size)
    if max_batches is not None:
        count = min(count, max_batches)
    for i in range(count):
        yield order[i * batch_size : (i + 1) * batch_size]


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The module a trainer's step should call: ``model`` itself in a single process, else
    wrapped in DistributedDataParallel with global-batch batch-norm (see ``distributed``)."""
    if not context().enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    model = convert_batchnorm(model, device)
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)


def _atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """Per-epoch metrics as CSV: ``dvc plots`` renders it and the registry logs it to MLflow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def run_training(
    model: nn.Module,
    num_samples: int,
    step: StepFn,
    optim: OptimConfig,
    *,
    fetch: FetchFn | None = None,
    **run: Unpack[RunArgs],
) -> LoopResult:
    """Train ``model`` for ``optim.epochs`` epochs.

    ``step(indices, generator)`` returns ``(loss, logs)`` for one *global* batch of sample
    indices (under torchrun the step computes its rank's shard; ``model`` is then the DDP wrapper
    from :func:`prepare_model`). The checkpoint at ``checkpoint`` is resumed when its
    ``fingerprint`` (a hash of the config) matches; a stale checkpoint from another config is
    ignored. Only rank 0 writes it; every rank reads it (a shared folder across nodes).

    ``fetch`` maps the epoch's index batches to the step's batches (default: the indices
    themselves). ``checkpoint_every``: also checkpoint after every that many batches; a resume
    then skips the batches done in the interrupted epoch and restores the augmentation
    generator, so the weights equal an uninterrupted run's.
    """
    seed, device, checkpoint = run["seed"], run["device"], run["checkpoint"]
    fingerprint, desc = run["fingerprint"], run["desc"]
    checkpoint_every = run.get("checkpoint_every")
    ctx = context()
    ctx.check_batch(optim.batch_size)
    module = unwrap(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Fused: one kernel per step, and its square root is the IEEE instruction; the default
    # implementation's goes through MKL and differs between CPU makers (fct_registry.numerics).
    optimizer = torch.optim.AdamW(
        trainable, lr=optim.lr, weight_decay=optim.weight_decay, fused=True
    )
    steps_per_epoch = max(1, num_samples // optim.batch_size)
    if optim.max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, optim.max_batches)
    total = steps_per_epoch * optim.epochs
    warmup = max(1, total // 20)

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 0
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return min(1.0, (step + 1) / warmup) * cosine

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    use_amp = device.type == "cuda"  # bf16 autocast: no loss scaling needed
    result = LoopResult()

    start_epoch = skip = 0
    partial: dict = {}
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            result.history = state["history"]
            start_epoch = result.resumed_from_epoch = int(state["epoch"])
            partial = state.get("partial", {})  # present when saved inside an epoch
            skip = int(partial.get("batches", 0))
            if ctx.is_main:
                where = (
                    f"batch {skip} of epoch {start_epoch + 1}" if skip else f"epoch {start_epoch}"
                )
                tqdm.write(f"{desc}: resuming after {where} from {checkpoint}")

    if ctx.is_main:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(start_epoch, optim.epochs):
        model.train()
        gen = torch.Generator().manual_seed(seed * 7_919 + epoch)
        sums: dict[str, float] = {}
        batches = 0
        indices = epoch_batches(num_samples, optim.batch_size, seed, epoch, optim.max_batches)
        if partial:  # the interrupted epoch: its first batches are done, skip them unread
            indices = itertools.islice(indices, skip, None)
            gen.set_state(partial["generator"].cpu())
            torch.set_rng_state(partial["rng"].cpu())
            sums, batches = dict(partial["sums"]), skip
            partial = {}
        bar = tqdm(
            fetch(indices) if fetch is not None else indices,
            total=steps_per_epoch,
            initial=batches,
            desc=f"{desc} epoch {epoch + 1}/{optim.epochs}",
            leave=False,
            dynamic_ncols=True,
            mininterval=1.0,
            disable=None if ctx.is_main else True,
        )  # no bar off a terminal (CI logs)
        for batch in bar:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, logs = step(batch, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            batches += 1
            for k, v in {"loss": float(loss.detach()), **logs}.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{sums['loss'] / batches:.4f}")
            if checkpoint_every and batches % checkpoint_every == 0 and batches < steps_per_epoch:
                if ctx.is_main:
                    _atomic_torch_save(
                        {
                            "model": module.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "history": result.history,
                            "epoch": epoch,
                            "fingerprint": fingerprint,
                            "partial": {
                                "batches": batches,
                                "sums": sums,
                                "generator": gen.get_state(),
                                "rng": torch.get_rng_state(),
                            },
                        },
                        checkpoint,
                    )
                ctx.barrier()
        means = ctx.mean({k: v / batches for k, v in sums.items()})
        row = {"epoch": epoch + 1, **means, "lr": scheduler.get_last_lr()[0]}
        result.history.append(row)
        if ctx.is_main:
            tqdm.write(
                f"{desc} epoch {epoch + 1}/{optim.epochs}: "
                + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")
            )
            _atomic_torch_save(
                {
                    "model": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": result.history,
                    "epoch": epoch + 1,
                    "fingerprint": fingerprint,
                },
                checkpoint,
            )
        ctx.barrier()
    module.eval()
    return result


def seeded_model(spec: ModelSpec, seed: int) -> nn.Module:
    """The model a trainer starts from: built from its spec right after seeding, so its initial
    weights depend on the seed alone."""
    torch.manual_seed(seed)
    return build_from_spec(spec)


def fit(
    model: nn.Module,
    step: NetStepFn,
    data: Split | int,
    optim: OptimConfig,
    **run: Unpack[RunArgs],
) -> tuple[nn.Module, LoopResult]:
    """Every trainer's run: move ``model`` to the device (channels-last: a no-op for models
    without 4-d weights), wrap it for torchrun (:func:`prepare_model`), train it with
    ``step(net, batch, generator)`` on the wrapped ``net``, and return the unwrapped model.

    ``data``: a split whose image batches the step reads (this rank's part under torchrun), or
    the number of rows of in-memory features (the step reads index batches of the global
    batch and takes its shard)."""
    device = run["device"]
    net = prepare_model(model.to(device, memory_format=torch.channels_last), device)
    fetch = None
    if not isinstance(data, int):
        split, ctx = data.to(device), context()
        data = len(split.labels)

        def fetch(indices: Iterator[torch.Tensor]) -> Iterable[Any]:
            return split_batches(split, indices, device=device, rank=ctx.rank, world=ctx.world_size)

    result = run_training(net, data, functools.partial(step, net), optim, fetch=fetch, **run)
    return unwrap(net), result
