"""Data-parallel training under ``torchrun`` (DistributedDataParallel), exact to the single process.

A run started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) joins
the process group (NCCL on GPU, gloo on CPU). The global batch of ``optim.batch_size`` is split
into equal contiguous shards, one per rank (the role of a ``DistributedSampler``); batch-norm
statistics are all-reduced over the global batch and SimCLR negatives are all-gathered, so for a
fixed seed and global batch every rank ends with the single-process weights. Only rank 0 writes
checkpoints, metrics and registry records.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn import functional as dist_fn

from fct_registry.errors import ConfigError

# The autograd-aware collectives below are the documented way to keep gradients across ranks;
# their suggested replacement is a private module, so the deprecation notice is only noise.
warnings.filterwarnings(
    "ignore", message=r"torch\.distributed\.nn\.functional\.", category=FutureWarning
)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (rows ``rank*b : (rank+1)*b``)."""
        if not self.enabled:
            return batch
        size = len(batch) // self.world_size
        return batch[self.rank * size : (self.rank + 1) * size]

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ConfigError(
                f"batch_size {batch_size} is not divisible by the {self.world_size} "
                "training processes; use a multiple of the process count"
            )

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average per-rank logs over ranks so history equals the single-process one."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.world_size).tolist(), strict=True))


def context() -> DistContext:
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group when started by torchrun; returns the rank's device."""
    if not launched_by_torchrun():
        return DistContext(), device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return context(), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch-norm over the global batch on any device (torch's SyncBatchNorm is GPU-only).

    Sums and squared sums are all-reduced with autograd, so gradients equal the single-process
    ones; outside training or without a process group it is plain batch-norm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = context()
        if not (self.training and ctx.enabled):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
        stats = dist_fn.all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * total / (total - 1))
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every batch-norm layer compute global-batch statistics (torch's SyncBatchNorm on
    GPU, :class:`GlobalBatchNorm` elsewhere); state dicts are unchanged."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            new = GlobalBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            ).to(child.weight.device if child.affine else device)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_batchnorm(child, device)
    return module


def gather_batch(z: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``z`` in rank order, with gradients flowing back to each rank."""
    if not context().enabled:
        return z
    return torch.cat(dist_fn.all_gather(z))
