"""Training data: a deterministic global-batch sampler, a dataset over clip shards, masks in collate.

Every step has one global batch, drawn from a per-epoch permutation seeded by (seed, epoch); rank r
takes positions r, r+world, ... of it. So N ranks together see exactly the batch one rank would, and
a run resumed at step k sees exactly what an uninterrupted run sees from step k. Masks are drawn
per sample from (seed, step, position in the global batch) for the same reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from videossl.data.shards import ClipStore
from videossl.masks import tube_masks


@dataclass(frozen=True)
class Item:
    step: int
    position: int  # position in the global batch
    index: int     # dataset index


class GlobalBatchSampler:
    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, start_step: int, steps: int):
        if global_batch % world:
            raise ValueError(f"pretrain.batch_size ({global_batch}) must be divisible by the world size ({world})")
        self.n, self.batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.start, self.steps = seed, start_step, steps

    def _global_indices(self, step: int) -> np.ndarray:
        per_epoch = max(1, self.n // self.batch)  # drop the ragged tail of each epoch
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        if self.n < self.batch:  # tiny datasets (tests): repeat the permutation
            order = np.resize(order, self.batch)
        return order[k * self.batch:(k + 1) * self.batch]

    def __iter__(self) -> Iterator[list[Item]]:
        for step in range(self.start, self.steps):
            idx = self._global_indices(step)
            yield [Item(step, p, int(idx[p])) for p in range(self.rank, self.batch, self.world)]

    def __len__(self) -> int:
        return self.steps - self.start


class ClipDataset(Dataset):
    """Video variant: every training clip. Frames variant: every frame of every training video."""

    def __init__(self, store: ClipStore, variant: str, split: str = "train"):
        self.store, self.variant = store, variant
        self.videos = store.videos_in(split)
        if not self.videos:
            raise ValueError(f"no '{split}' videos in {store.dir}: check ingest.splits")
        if variant == "video":
            self.keys = [(v, s) for v in range(len(self.videos)) for s in self.videos[v].clip_starts]
            self.frames = store.clip_frames
        else:
            self.keys = [(v, f) for v in range(len(self.videos)) for f in range(self.videos[v].frames)]
            self.frames = 1

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, item: Item) -> tuple[np.ndarray, Item]:
        v, start = self.keys[item.index]
        return self.store.window(self.videos[v], start, self.frames), item


class MaskCollator:
    def __init__(self, grid: tuple[int, int, int], ratio: float, seed: int):
        self.grid, self.ratio, self.seed = grid, ratio, seed

    def __call__(self, samples: list[tuple[np.ndarray, Item]]):
        clips = torch.from_numpy(np.stack([s[0] for s in samples]))
        per_sample = [tube_masks(1, self.grid, self.ratio, np.random.default_rng([self.seed, it.step, it.position]))
                      for _, it in samples]
        keep = torch.cat([m.keep for m in per_sample])
        masked = torch.cat([m.masked for m in per_sample])
        return clips, keep, masked


def make_loader(dataset: ClipDataset, sampler: GlobalBatchSampler, collate: MaskCollator,
                num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False)
