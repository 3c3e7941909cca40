"""The one batch-split rule: how a global batch is shared by the ranks and cut into passes.

`pretrain.batch_size` is the global batch, the same whatever the world size. Every rank takes an
equal share of it and goes through the share in passes of `pretrain.micro_batch` clips (gradient
accumulation; default: the whole share in one pass). An objective whose loss needs several clips in
one forward pass (contrastive: the other clips of the pass are its negatives) needs at least
`MIN_CLIPS_PER_PASS[objective]` clips in every pass of every rank: with one clip InfoNCE sees a
1 x 1 logit matrix, its loss is identically 0 and the run learns nothing.

Config validation (local nproc), the training loop and data feeder (the world it runs in), and the
cluster job renderer (nodes x processes per node) all call `split_batch`, so a job that cannot work
fails before launch, naming the keys.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_CLIPS_PER_PASS = {"contrastive": 2}


@dataclass(frozen=True)
class BatchSplit:
    global_batch: int
    world: int
    per_rank: int  # clips of the global batch each rank takes
    micro: int     # clips per forward/backward pass on a rank
    passes: int    # passes per step on a rank (gradient accumulation)


def objectives_of(pretrain) -> set[str]:
    """Every objective a pretrain config trains (the video encoder's and the frame encoder's)."""
    names = {pretrain.objective} if isinstance(pretrain.objective, str) else set(pretrain.objective)
    return names | {pretrain.baseline_objective}


def split_batch(global_batch: int, world: int, micro_batch: int | None, objectives: set[str] = frozenset(),
                world_keys: str = "pretrain.nproc") -> BatchSplit:
    """The split, or ValueError naming the keys that disagree (`world_keys` names where the world
    size comes from: pretrain.nproc locally, cluster.job.nodes x procs_per_node on a cluster)."""
    if world < 1:
        raise ValueError(f"{world_keys}: the world size must be >= 1 (got {world})")
    if global_batch % world:
        raise ValueError(f"pretrain.batch_size ({global_batch}) must be divisible by the number of processes "
                         f"({world_keys} = {world}): every process takes an equal share of the global batch")
    per_rank = global_batch // world
    micro = micro_batch or per_rank
    if per_rank % micro:
        raise ValueError(f"pretrain.micro_batch ({micro}) must divide each process's share of the batch "
                         f"(pretrain.batch_size / {world_keys} = {per_rank})")
    need = max((MIN_CLIPS_PER_PASS.get(o, 1) for o in objectives), default=1)
    if micro < need:
        which = sorted(o for o in objectives if MIN_CLIPS_PER_PASS.get(o, 1) > micro)
        keys = (f"pretrain.micro_batch ({micro_batch})" if micro_batch
                else f"pretrain.batch_size ({global_batch}) / {world_keys} ({world})")
        raise ValueError(f"{keys} gives every forward pass {micro} clip(s); {', '.join(which)} needs at least "
                         f"{need} (its negatives are the other clips of a pass): raise pretrain.batch_size or "
                         f"use fewer processes")
    return BatchSplit(global_batch, world, per_rank, micro, per_rank // micro)
