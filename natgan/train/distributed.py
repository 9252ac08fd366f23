"""Multi-GPU / multi-node data parallelism under ``torchrun`` (env:// rendezvous).

Gradients are averaged explicitly (one flattened all-reduce per optimiser step, as stylegan2-ada
does) rather than through DDP wrappers: GAN steps toggle ``requires_grad`` between G and D, run
lazy regularisers on some steps only, and accumulate micro-batches — all awkward for DDP hooks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from natgan.devices import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def check_device(device_pref: str) -> None:
    """A single-process run on a device this machine lacks (``cuda`` without CUDA, ``cuda:3`` on a 1-GPU box)
    is a one-line ConfigError before anything is built; under torchrun each rank's device is assigned."""
    if device_pref != "auto" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        resolve_device(device_pref, option="train.device")


def init(device_pref: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, option="key 'train.device'", local_rank=local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank), device


def shutdown(*, finished: bool = False) -> None:
    """Leave the process group. ``finished``: every rank completed the run, so wait for all of them first.

    Why the barrier: rank 0 writes the last checkpoint after the final step while the other ranks are
    already done; a rank that tears gloo down while its peer is still busy (or already gone) can abort in
    gloo's threads ("terminate called without an active exception", exit -6) although training succeeded.
    After an error no barrier is attempted, since the other ranks may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def average_gradients(module: torch.nn.Module, info: DistInfo) -> None:
    if not info.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= info.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not info.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= info.world
    return values


def any_flag(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True on every rank if it is true on any (used to stop all ranks together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
