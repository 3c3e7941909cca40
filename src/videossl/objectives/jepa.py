"""V-JEPA: from the visible context, predict the features a slowly moving target encoder gives the
masked tube blocks. No pixels are reconstructed.

- masks: multi-block tube masks made per sample in the collate function (`masks.multiblock_masks`),
  or with `pretrain.masking: future` the clip's second half (`masks.future_masks`): it learns to
  predict what comes next, and eval/surprise.py asks it what it expected;
- the online encoder sees the context tokens only; a narrow predictor (context + mask tokens with
  positions, like the MAE decoder) outputs encoder-width features for the masked tokens;
- the target encoder is an EMA copy of the encoder (no gradient) that sees the FULL clip; its
  features are layer-normed over the feature dim and gathered at the masked positions;
- loss: L1 between prediction and target; the EMA momentum ramps linearly from `ema_start` to
  `ema_end` over training (`after_step`).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from videossl.data.transforms import to_model_input
from videossl.masks import TubeMasks, future_masks, multiblock_masks
from videossl.models.predictor import MaskTokenPredictor
from videossl.models.vit import VideoViT, take_tokens
from videossl.objectives.base import Batch, Objective, Recipe, stack


class JEPARecipe(Recipe):
    """A clip and its mask: multi-block tubes (drawn per sample from the sample's own generator), or
    with `future` the clip's second half, predicted from its first."""

    def __init__(self, frames: int, grid: tuple[int, int, int], target_ratio: float,
                 block_scale: tuple[float, float], block_aspect: tuple[float, float], future: bool = False):
        super().__init__(frames)
        self.grid, self.ratio, self.future = grid, target_ratio, future
        self.scale, self.aspect = tuple(block_scale), tuple(block_aspect)
        spatial = grid[1] * grid[2]
        n = int(round(spatial * target_ratio))
        if not 0 < n < spatial:
            raise ValueError(f"pretrain.jepa.target_ratio ({target_ratio}) hides {n} of the {spatial} spatial "
                             f"positions of a {grid[1]}x{grid[2]} patch grid: need 0 < hidden < all")

    def collate(self, examples, rngs: list[np.random.Generator]) -> Batch:
        batch = stack(examples)
        if self.future:
            masks = future_masks(len(examples), self.grid)
            batch["keep"], batch["masked"] = masks.keep, masks.masked
            return batch
        masks = [multiblock_masks(1, self.grid, self.ratio, self.scale, self.aspect, rng) for rng in rngs]
        batch["keep"] = torch.cat([m.keep for m in masks])
        batch["masked"] = torch.cat([m.masked for m in masks])
        return batch


class JEPA(Objective):
    def __init__(self, encoder: VideoViT, predictor_dim: int, predictor_depth: int, predictor_heads: int,
                 ema_start: float, ema_end: float):
        super().__init__(encoder)
        self.predictor = MaskTokenPredictor(encoder.shape, predictor_dim, predictor_depth, predictor_heads,
                                            out_dim=encoder.shape.dim)
        self.target = copy.deepcopy(encoder).requires_grad_(False)
        self.ema_start, self.ema_end = ema_start, ema_end
        self.momentum = ema_start

    def momentum_at(self, step: int, total: int) -> float:
        """Linear ramp: ema_start before the first update, ema_end at the last step."""
        return self.ema_start + (self.ema_end - self.ema_start) * min(1.0, step / max(1, total - 1))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        video = to_model_input(batch["clip"])
        errors, pred, target = self.loss_parts(video, TubeMasks(batch["keep"], batch["masked"]))
        loss = errors.mean()  # every clip of a batch hides as many tokens
        # collapse signals: the spread of predictions and targets across clips and positions (a collapsed
        # predictor or target encoder drives its spread to 0); tensors, read at log steps only
        return loss, {"ema_momentum": self.momentum, "pred_spread": pred.detach().flatten(0, 1).std(0).mean(),
                      "target_spread": target.flatten(0, 1).std(0).mean()}

    def loss(self, video: torch.Tensor, masks: TubeMasks) -> torch.Tensor:
        """L1 between predicted and layer-normed target features of the masked tokens (a scalar)."""
        return self.loss_parts(video, masks)[0].mean()

    def loss_parts(self, video: torch.Tensor, masks: TubeMasks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per clip, the L1 error of its masked tokens' predicted features [B] (the loss's terms;
        eval/surprise.py reads them as surprise), the predictions and the targets."""
        pred = self.predictor(self.encoder(video, keep=masks.keep), masks).float()
        with torch.no_grad():
            h = self.target(video).float()
            h = F.layer_norm(h, h.shape[-1:])
            h = take_tokens(h, masks.masked)
        return (pred - h).abs().mean((1, 2)), pred, h

    @torch.no_grad()
    def after_step(self, step: int, total: int) -> None:
        self.momentum = m = self.momentum_at(step, total)
        target, online = list(self.target.parameters()), list(self.encoder.parameters())
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, online, alpha=1.0 - m)
