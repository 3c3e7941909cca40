"""The torchrun environment, and nothing else: the same code runs as 1 process, N local processes
(`torchrun --standalone`) or N nodes (Kubeflow Trainer / Training Operator, which inject PET_* and
MASTER_*/RANK/WORLD_SIZE for torchrun to turn into the variables read here)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    local_world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def read_env() -> DistEnv:
    return DistEnv(rank=int(os.environ.get("RANK", 0)), world=int(os.environ.get("WORLD_SIZE", 1)),
                   local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                   local_world=int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def setup(env: DistEnv) -> torch.device:
    """Join the process group (nccl on GPU, gloo on CPU) and pick this rank's device."""
    if torch.cuda.is_available():
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if env.world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def total(value: torch.Tensor) -> float:
    """The sum of a scalar over all ranks, on the host (every rank gets the same number): a sync."""
    if dist.is_initialized():
        value = value.detach().clone().float()
        dist.all_reduce(value)
    return float(value)


def all_gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(obj):
    """Rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(ok: bool = True) -> None:
    """Leave the process group; after a failure without the final barrier (the other ranks may be
    stuck elsewhere or gone: torchrun stops them when this process exits non-zero)."""
    if dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()
