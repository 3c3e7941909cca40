"""Temporal transformation recognition (Jenni et al. 2020; RSPNet's speed task): from the encoder's
time-ordered features, tell forward from backward, the playback speed, and shuffled from ordered.

Each example draws one transformation from its own generator:
- speed: a frame step from `speeds`; the window of `frames` frames at that step is placed at a random
  offset inside the example's span of frames * max(speeds) frames. Without the offset, slow clips
  would always show the beginning of the span and fast clips its end too, so "how far into the
  video" (objects settled, dye spread) would give the speed away. The span has max(speeds) - 1
  frames more than the fastest window needs, so even the fastest clips start at a random phase
  (clip starts are multiples of ingest.clip_stride, often in step with the codec's keyframes);
- arrow: played backwards with probability 1/2;
- shuffle: frames in a random non-identity order with probability `shuffle_prob`. A shuffled clip
  has no arrow of time, so its arrow label is ignored (-100) in the loss and the accuracy.
Features: `encoder.embed_time(x).flatten(1)`, tokens mean-pooled over space only, in time order (a
mean over all tokens would be nearly blind to order). One linear head per task; the loss is the
sum of the tasks' cross-entropies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videossl.data.shards import ClipStore, Video
from videossl.data.transforms import to_model_input
from videossl.models.vit import VideoViT
from videossl.objectives.base import Batch, Example, Objective, Recipe

TASKS = ("arrow", "speed", "shuffle")
IGNORE = -100  # cross-entropy's ignore_index: no label for this example


@dataclass(frozen=True)
class Transform:
    speed: int                     # index into the recipe's speeds
    offset: int                    # first frame of the window, relative to the example's start
    backwards: bool
    order: tuple[int, ...] | None  # frame permutation of a shuffled clip (None: ordered)


class PretextRecipe(Recipe):
    def __init__(self, frames: int, speeds: list[int], tasks: list[str], shuffle_prob: float):
        super().__init__(frames)
        unknown = set(tasks) - set(TASKS)
        if unknown or not tasks:
            raise ValueError(f"pretrain.pretext.tasks: unknown {sorted(unknown)} (allowed: {list(TASKS)})")
        self.tasks = [t for t in TASKS if t in tasks]
        self.speeds = sorted(speeds) if "speed" in tasks else [1]
        self.shuffle_prob = shuffle_prob

    @property
    def frames_needed(self) -> int:
        return self.frames * max(self.speeds)  # the fastest window, (frames-1)*max+1, plus max-1 of jitter

    def draw(self, rng: np.random.Generator) -> Transform:
        """The transformation of one example (every random choice of `example` comes from here)."""
        speed = int(rng.integers(len(self.speeds)))
        span = (self.frames - 1) * self.speeds[speed] + 1
        offset = int(rng.integers(self.frames_needed - span + 1))
        backwards = "arrow" in self.tasks and bool(rng.random() < 0.5)
        order = None
        if "shuffle" in self.tasks and rng.random() < self.shuffle_prob:
            order = tuple(int(i) for i in _shuffled_order(self.frames, rng))
        return Transform(speed, offset, backwards, order)

    def labels(self, t: Transform) -> dict[str, int]:
        out = {"arrow": IGNORE if t.order is not None else int(t.backwards),
               "speed": t.speed, "shuffle": int(t.order is not None)}
        return {k: out[k] for k in self.tasks}

    def apply(self, store: ClipStore, video: Video, start: int, t: Transform) -> np.ndarray:
        clip = store.window(video, start + t.offset, self.frames, self.speeds[t.speed])
        if t.backwards:
            clip = clip[::-1]
        if t.order is not None:
            clip = clip[list(t.order)]
        return np.ascontiguousarray(clip)

    def example(self, store: ClipStore, video: Video, start: int, rng: np.random.Generator) -> Example:
        t = self.draw(rng)
        out = {"clip": self.apply(store, video, start, t)}
        out.update({k: np.array(v, dtype=np.int64) for k, v in self.labels(t).items()})
        return out


def _shuffled_order(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random order of n frames that is neither the identity nor its reverse (both are not shuffles)."""
    if n < 3:
        raise ValueError(f"shuffling needs clips of >= 3 frames (got {n}): drop 'shuffle' from pretrain.pretext.tasks")
    ident = np.arange(n)
    while True:
        order = rng.permutation(n)
        if not (np.array_equal(order, ident) or np.array_equal(order, ident[::-1])):
            return order


class Pretext(Objective):
    def __init__(self, encoder: VideoViT, tasks: list[str], n_speeds: int):
        super().__init__(encoder)
        width = encoder.shape.grid[0] * encoder.shape.dim
        classes = {"arrow": 2, "speed": n_speeds, "shuffle": 2}
        self.heads = nn.ModuleDict({t: nn.Linear(width, classes[t]) for t in TASKS if t in tasks})
        for head in self.heads.values():  # small logits: every task starts near chance, not confidently wrong
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(self.encoder.embed_time(to_model_input(batch["clip"])).flatten(1), batch)

    def loss(self, feats: torch.Tensor, labels: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The heads on time-ordered features [B, T' * D] against `labels[task]` [B]."""
        total, logs = 0.0, {}
        for task, head in self.heads.items():
            logits, target = head(feats).float(), labels[task]
            valid = target != IGNORE
            n = valid.sum().clamp(min=1)
            # mean over the labelled examples; a batch with none still touches the head (DDP needs it)
            ce = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
            total = total + (ce * valid).sum() / n
            logs[f"{task}_acc"] = (((logits.argmax(1) == target) & valid).sum() / n).detach()  # read at log steps
        return total, logs
