"""Process-group setup for ``torchrun`` (DDP and FSDP): gloo on CPU, nccl on CUDA. One process = rank 0 of 1.

FSDP needs a process group even on one process (``train.parallel = "fsdp"`` without torchrun trains one shard
that holds the whole model): `setup` then makes a group of one, over an in-memory store, and `teardown` ends it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    own_group: bool = False  # a one-process group `setup` made for FSDP (ended by `teardown`)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def setup(device_name: str, parallel: str = "ddp") -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), or make a one-process group for FSDP;
    return (info, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = pick_device(device_name)
        if parallel != "fsdp" or dist.is_initialized():
            return DistInfo(), device
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(),
                                rank=0, world_size=1)
        return DistInfo(own_group=True), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank, world, local), device


def mean_across(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / info.world_size


def sum_across(value: float, info: DistInfo, device: torch.device) -> float:
    """`value` summed over every process (itself on one process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item()


def gather_floats(value: float, info: DistInfo, device: torch.device) -> list[float]:
    """[every process's `value`] in rank order ([value] on one process)."""
    if not info.enabled:
        return [value]
    t = torch.zeros(info.world_size, dtype=torch.float64, device=device)
    t[info.rank] = value
    dist.all_reduce(t)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if (info.enabled or info.own_group) and dist.is_initialized():
        dist.destroy_process_group()

