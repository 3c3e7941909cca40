"""What every pretraining objective provides, and the weighted combination of several.

An objective has two halves:
- a `Recipe` (CPU side, picklable, runs in DataLoader workers): how many frames an example needs
  from its start, how one example is cut from a video, and how examples are collated into a batch
  (masks are made here, in the collate function, as in V-JEPA);
- an `Objective` (an nn.Module over the shared encoder): the loss of a batch, and any per-step
  bookkeeping (e.g. an EMA target encoder).
All randomness on the CPU side comes from the `rng` handed in, which the data feeder seeds from
(seed, step, position in the global batch): N ranks and a resumed run draw exactly what one
uninterrupted rank would.
"""
from __future__ import annotations

import abc

import numpy as np
import torch
from torch import nn

from videossl.data.shards import ClipStore, Video
from videossl.models.vit import VideoViT

Batch = dict[str, torch.Tensor]
Example = dict[str, np.ndarray]


class Recipe:
    """Default recipe: one clip of the encoder's length from the start."""

    def __init__(self, frames: int):
        self.frames = frames

    @property
    def frames_needed(self) -> int:
        return self.frames

    def example(self, store: ClipStore, video: Video, start: int, rng: np.random.Generator) -> Example:
        return {"clip": store.window(video, start, self.frames)}

    def collate(self, examples: list[Example], rngs: list[np.random.Generator]) -> Batch:
        return stack(examples)

    def components(self) -> tuple["Recipe", ...]:
        """The recipes this one is made of (a combination's parts); none for a plain recipe."""
        return ()


class Objective(nn.Module, abc.ABC):
    def __init__(self, encoder: VideoViT):
        super().__init__()
        self.encoder = encoder

    @abc.abstractmethod
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss, {name: float} to log)."""

    def after_step(self, step: int, total: int) -> None:
        """Called after each optimizer step (e.g. to move an EMA target)."""

    def components(self) -> tuple["Objective", ...]:
        """The objectives this one is made of (a combination's parts); none for a plain objective."""
        return ()


def find_part(node, kind):
    """`node` (an objective or a recipe) if it is a `kind`, else the first of its components, depth
    first, that is; None without one. Evaluation reads an objective's own heads and predictor with it,
    whatever the composition."""
    if isinstance(node, kind):
        return node
    return next((p for p in map(lambda c: find_part(c, kind), node.components()) if p is not None), None)


def stack(examples: list[Example]) -> Batch:
    return {k: torch.from_numpy(np.stack([e[k] for e in examples])) for k in examples[0]}


class CombinedRecipe(Recipe):
    """Each part's example under its own key prefix, so parts never see each other's inputs."""

    def __init__(self, parts: dict[str, Recipe]):
        self.parts = parts

    def components(self) -> tuple[Recipe, ...]:
        return tuple(self.parts.values())

    @property
    def frames_needed(self) -> int:
        return max(r.frames_needed for r in self.parts.values())

    def example(self, store, video, start, rng) -> Example:
        out = {}
        for name, recipe in self.parts.items():
            out.update({f"{name}/{k}": v for k, v in recipe.example(store, video, start, rng).items()})
        return out

    def collate(self, examples, rngs) -> Batch:
        out = {}
        for name, recipe in self.parts.items():
            prefix = f"{name}/"
            mine = [{k[len(prefix):]: v for k, v in e.items() if k.startswith(prefix)} for e in examples]
            out.update({prefix + k: v for k, v in recipe.collate(mine, rngs).items()})
        return out


class Combined(Objective):
    """Weighted sum of objectives that share one encoder."""

    def __init__(self, encoder: VideoViT, parts: dict[str, Objective], weights: dict[str, float]):
        super().__init__(encoder)
        self.parts = nn.ModuleDict(parts)
        self.weights = weights

    def components(self) -> tuple[Objective, ...]:
        return tuple(self.parts.values())

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        total, logs = 0.0, {}
        for name, part in self.parts.items():
            prefix = f"{name}/"
            loss, part_logs = part({k[len(prefix):]: v for k, v in batch.items() if k.startswith(prefix)})
            total = total + self.weights[name] * loss
            logs[f"loss_{name}"] = loss.detach()  # a tensor: read (a device sync) only at log steps
            logs.update({f"{name}_{k}": v for k, v in part_logs.items()})
        return total, logs

    def after_step(self, step: int, total: int) -> None:
        for part in self.parts.values():
            part.after_step(step, total)
