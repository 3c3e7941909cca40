"""VideoMAE: the encoder sees only visible tokens; a narrow decoder reconstructs the masked ones.

Targets are the masked patches' pixels, as the model sees them (`pretrain.normalize_targets: true`
standardises each tubelet patch by its own mean and variance, VideoMAE's choice; off by default, see
params.yaml), and the loss is taken on masked tokens only.
"""
from __future__ import annotations

import numpy as np
import torch

from videossl.data.transforms import to_model_input
from videossl.masks import TubeMasks, future_masks, tube_masks
from videossl.models.predictor import MaskTokenPredictor
from videossl.models.vit import VideoViT, VitShape, take_tokens
from videossl.objectives.base import Batch, Objective, Recipe, stack

TARGET_EPS = 1e-6  # variance floor of the per-patch target normalisation (flat patches)


def patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, N, tubelet*patch*patch*C] in the encoder's (t, h, w) token order."""
    b, c, t, h, w = video.shape
    x = video.view(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # B, t', h', w', tubelet, p, p, C
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch * c)


def normalised_targets(video: torch.Tensor, shape: VitShape) -> torch.Tensor:
    p = patchify(video, shape.tubelet, shape.patch)
    mean, var = p.mean(-1, keepdim=True), p.var(-1, keepdim=True)
    return (p - mean) / (var + TARGET_EPS).sqrt()


class MAERecipe(Recipe):
    """A clip and its mask: random tubes (drawn per sample from the sample's own generator), or with
    `future` the clip's second half, reconstructed from its first."""

    def __init__(self, frames: int, grid: tuple[int, int, int], mask_ratio: float, future: bool = False):
        super().__init__(frames)
        self.grid, self.mask_ratio, self.future = grid, mask_ratio, future

    def collate(self, examples, rngs: list[np.random.Generator]) -> Batch:
        batch = stack(examples)
        if self.future:
            masks = future_masks(len(examples), self.grid)
            batch["keep"], batch["masked"] = masks.keep, masks.masked
            return batch
        masks = [tube_masks(1, self.grid, self.mask_ratio, rng) for rng in rngs]
        batch["keep"] = torch.cat([m.keep for m in masks])
        batch["masked"] = torch.cat([m.masked for m in masks])
        return batch


class MAE(Objective):
    def __init__(self, encoder: VideoViT, decoder_dim: int, decoder_depth: int, decoder_heads: int,
                 normalize_targets: bool):
        super().__init__(encoder)
        self.normalize_targets = normalize_targets
        self.decoder = MaskTokenPredictor(encoder.shape, decoder_dim, decoder_depth, decoder_heads,
                                          out_dim=encoder.shape.patch_dim)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        video = to_model_input(batch["clip"])
        return self.loss(video, TubeMasks(batch["keep"], batch["masked"])), {}

    def loss(self, video: torch.Tensor, masks: TubeMasks) -> torch.Tensor:
        """Mean squared error on the masked tokens' pixels, per-patch normalised only with
        `pretrain.normalize_targets` (off by default: see params.yaml) (a scalar)."""
        return self.clip_errors(video, masks).mean()  # every clip of a batch hides as many tokens

    def clip_errors(self, video: torch.Tensor, masks: TubeMasks) -> torch.Tensor:
        """Per clip, the mean squared error of its masked tokens' reconstruction [B] (the loss's terms;
        eval/surprise.py reads them as surprise)."""
        pred = self.decoder(self.encoder(video, keep=masks.keep), masks)
        with torch.no_grad():
            shape = self.encoder.shape
            target = (normalised_targets(video, shape) if self.normalize_targets
                      else patchify(video, shape.tubelet, shape.patch))
            target = take_tokens(target, masks.masked)
        return ((pred.float() - target) ** 2).mean((1, 2))
