"""Training data: a deterministic global-batch sampler, a dataset over clip shards, the objective's
collate (masks are made there).

Every step has one global batch, drawn from a per-epoch permutation seeded by (seed, epoch); rank r
takes positions r, r+world, ... of it. So N ranks together see exactly the batch one rank would, and
a run resumed at step k sees exactly what an uninterrupted run sees from step k. Masks are drawn
per sample from (seed, step, position in the global batch) for the same reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset

from videossl.data.shards import ClipStore
from videossl.objectives.base import Example, Recipe


@dataclass(frozen=True)
class Item:
    step: int
    position: int  # position in the global batch
    index: int     # dataset index


class GlobalBatchSampler:
    """The global batch of every step, a function of (seed, step) only: each rank takes its positions,
    and a resumed run draws what the uninterrupted one would have.

    `window` 0: each epoch is one permutation of every example. `window` N (pretrain.shard_window) with
    `groups` (each example's shard): each epoch takes the shards in a random order, N at a time, and
    permutes the examples of those N shards; training reads N shards at a time, so a streamed dataset
    (data/remote.py) needs a cache of N shards, not of the whole dataset, and fetches each shard once an epoch."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, start_step: int, steps: int,
                 groups: Sequence[int] | None = None, window: int = 0):
        if global_batch % world:
            raise ValueError(f"pretrain.batch_size ({global_batch}) must be divisible by the world size ({world})")
        self.n, self.batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.start, self.steps = seed, start_step, steps
        self.groups = None if groups is None or not window else np.asarray(groups)
        self.window = window
        self._epoch: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.groups is None:
            return rng.permutation(self.n)
        if self._epoch is None or self._epoch[0] != epoch:
            shards = rng.permutation(np.unique(self.groups))
            parts = [rng.permutation(np.flatnonzero(np.isin(self.groups, shards[i:i + self.window])))
                     for i in range(0, len(shards), self.window)]
            self._epoch = (epoch, np.concatenate(parts))
        return self._epoch[1]

    def _global_indices(self, step: int) -> np.ndarray:
        per_epoch = max(1, self.n // self.batch)  # drop the ragged tail of each epoch
        epoch, k = divmod(step, per_epoch)
        order = self._order(epoch)
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
    """Training examples cut by the objective's recipe.

    Video variant: one example per manifest clip start where the recipe's window fits. Frames
    variant (T=1 encoder): one example per frame of every training video. The benchmark world's
    videos are never among them (ClipStore.pretraining_videos).
    """

    def __init__(self, store: ClipStore, variant: str, recipe: Recipe, seed: int, split: str = "train",
                 real: bool = False):
        self.store, self.recipe, self.seed = store, recipe, seed
        self.videos = store.pretraining_videos(split, real)
        if not self.videos:
            hint = "" if real or not store.videos_in(split, "real") else (
                "; real footage is evaluation footage unless pretrain.real_footage is true")
            raise ValueError(f"no '{split}' videos to pretrain on in {store.dir}: check ingest.splits{hint}")
        need = recipe.frames_needed
        if variant == "video":
            self.keys = [(v, s) for v, video in enumerate(self.videos) for s in video.clip_starts
                         if s + need <= video.frames]
        else:
            self.keys = [(v, f) for v, video in enumerate(self.videos) for f in range(video.frames - need + 1)]
        if not self.keys:
            raise ValueError(f"no training video has the {need} frames one example needs")

    def __len__(self) -> int:
        return len(self.keys)

    def shards(self) -> list[int]:
        """Each example's shard, numbered: what GlobalBatchSampler windows over (pretrain.shard_window)."""
        names = sorted({video.shard for video in self.videos})
        number = {name: i for i, name in enumerate(names)}
        return [number[self.videos[v].shard] for v, _ in self.keys]

    def __getitem__(self, item: Item) -> tuple[Example, Item]:
        v, start = self.keys[item.index]
        rng = sample_rng(self.seed, item, stream=0)
        return self.recipe.example(self.store, self.videos[v], start, rng), item


def sample_rng(seed: int, item: Item, stream: int) -> np.random.Generator:
    """The generator of one sample: a function of (seed, step, position in the global batch) only."""
    return np.random.default_rng([seed, item.step, item.position, stream])


class Collator:
    """Stacks examples and lets the recipe add what it makes per batch (masks), on the CPU."""

    def __init__(self, recipe: Recipe, seed: int):
        self.recipe, self.seed = recipe, seed

    def __call__(self, samples: list[tuple[Example, Item]]):
        examples = [e for e, _ in samples]
        rngs = [sample_rng(self.seed, it, stream=1) for _, it in samples]
        return self.recipe.collate(examples, rngs)


def make_loader(dataset: ClipDataset, sampler: GlobalBatchSampler, collate: Collator,
                num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=False)
