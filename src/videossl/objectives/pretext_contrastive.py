"""Pretext and contrastive on the same clips: one encoder pass where the weighted pair takes two.

Combined (objectives/base.py), the pretext part embeds one clip per example and the contrastive part
two more, so a step encodes three clips per example. Here each example is the contrastive pair (two
clips of one video, `gap` frames apart, each with its own crop and colour), and both clips undergo
the same temporal transformation (speed, direction, shuffle: one draw of the pretext recipe). Every
clip is encoded once; the pretext heads classify the transformation of both clips, and InfoNCE pairs
them. Two clips per example, both labelled: twice the pretext examples at two thirds of the encoder
work. The positives share their transformation, so the contrastive part never asks the encoder to
forget the arrow of time or the speed, which the pretext part asks it to keep.

`pretrain.contrastive.pretext_views: true` selects it whenever the objective weights both parts;
the loss is weights[pretext] * pretext + weights[contrastive] * InfoNCE, with the same heads and the
same logged names as the separate parts.
"""
from __future__ import annotations

import numpy as np
import torch

from videossl.data.shards import ClipStore, Video
from videossl.data.transforms import to_model_input
from videossl.models.vit import VideoViT, pool_space
from videossl.objectives.base import Batch, Example, Objective, Recipe
from videossl.objectives.contrastive import (PAIR, STATIC, Contrastive, ContrastiveRecipe, augment, draw_view, info_nce,
                                             static_part)
from videossl.objectives.pretext import Pretext, PretextRecipe

PRETEXT, CONTRASTIVE = "pretext", "contrastive"


class PretextContrastiveRecipe(Recipe):
    def __init__(self, pretext: PretextRecipe, contrastive: ContrastiveRecipe):
        super().__init__(pretext.frames)
        self.pretext, self.contrastive = pretext, contrastive

    def components(self) -> tuple[Recipe, ...]:
        return self.pretext, self.contrastive

    @property
    def frames_needed(self) -> int:
        return self.pretext.frames_needed  # the second clip's gap fits in what the first leaves

    def example(self, store: ClipStore, video: Video, start: int, rng: np.random.Generator) -> Example:
        t = self.pretext.draw(rng)
        span = (self.frames - 1) * self.pretext.speeds[t.speed] + 1
        room = video.frames - (start + t.offset + span)  # the latest second window that still fits
        if room < 0:
            raise IndexError(f"clip at {start} of {self.frames_needed} frames does not fit {video.source_id} "
                             f"({video.frames} frames)")
        gap = int(rng.integers(min(self.contrastive.max_gap, room) + 1))
        out: Example = {}
        c = self.contrastive
        # what does not move: the same under any temporal transformation
        static = static_part(store, video, start, start + gap + span) if c.background == "swap" else None
        for key, s in zip(PAIR, (start, start + gap)):
            clip = self.pretext.apply(store, video, s, t)
            view = draw_view(clip.shape[1], clip.shape[2], c.crop_scale, rng, c.flip, c.colour)
            out[key] = augment(clip, view)
            if static is not None:  # under the clip's own crop and colour
                out[key + STATIC] = augment(static, view)
        out.update({k: np.array(v, dtype=np.int64) for k, v in self.pretext.labels(t).items()})
        out["gap"] = np.array(gap, dtype=np.int64)
        return out

    def collate(self, examples, rngs: list[np.random.Generator]) -> Batch:
        return self.contrastive.collate(examples, rngs)  # the pair's own background treatment, then stacked


class PretextContrastive(Objective):
    def __init__(self, encoder: VideoViT, pretext: Pretext, contrastive: Contrastive, weights: dict[str, float]):
        super().__init__(encoder)
        self.pretext, self.contrastive = pretext, contrastive
        self.weights = weights

    def components(self) -> tuple[Objective, ...]:
        return self.pretext, self.contrastive

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        clips = torch.cat([batch["view1"], batch["view2"]])
        tokens = self.encoder(to_model_input(clips))  # [2B, N, D]: each clip once, for both losses
        labels = {task: batch[task].repeat(2) for task in self.pretext.heads}
        p_loss, p_logs = self.pretext.loss(pool_space(tokens, self.encoder.shape.grid[0]).flatten(1), labels)
        z1, z2 = self.contrastive.project_pooled(tokens.mean(1)).chunk(2)
        c_loss, acc = info_nce(z1, z2, self.contrastive.temperature)
        logs = {f"loss_{PRETEXT}": p_loss.detach(), f"loss_{CONTRASTIVE}": c_loss.detach(),
                **{f"{PRETEXT}_{k}": v for k, v in p_logs.items()},
                f"{CONTRASTIVE}_acc": acc.detach(), f"{CONTRASTIVE}_gap": batch["gap"].float().mean()}
        return self.weights[PRETEXT] * p_loss + self.weights[CONTRASTIVE] * c_loss, logs
