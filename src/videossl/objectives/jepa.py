"""V-JEPA: from the visible context, predict the features a slowly moving target encoder gives the
masked tube blocks. No pixels are reconstructed.

- masks: multi-block tube masks made per sample in the collate function (`masks.multiblock_masks`);
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
from torch import nn

from videossl.data.transforms import to_model_input
from videossl.masks import TubeMasks, multiblock_masks
from videossl.models.vit import Block, VideoViT, VitShape, init_weights, sincos_3d
from videossl.objectives.base import Batch, Objective, Recipe, stack


class Predictor(nn.Module):
    """Context tokens + mask tokens (with their positions) -> encoder-width features of the masked tokens."""

    def __init__(self, shape: VitShape, dim: int, depth: int, heads: int):
        super().__init__()
        self.embed = nn.Linear(shape.dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_3d(shape.grid, dim)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, shape.mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, shape.dim)
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, masks: TubeMasks) -> torch.Tensor:
        """[B, N_keep, D_enc] -> [B, N_mask, D_enc]."""
        x = self.embed(context)
        b, n_keep, d = x.shape
        pos = self.pos_embed.expand(b, -1, -1)
        x = x + torch.gather(pos, 1, masks.keep[..., None].expand(-1, -1, d))
        m = self.mask_token.expand(b, masks.masked.shape[1], d) + torch.gather(
            pos, 1, masks.masked[..., None].expand(-1, -1, d))
        x = torch.cat([x, m], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, n_keep:]))


class JEPARecipe(Recipe):
    """A clip and its multi-block mask (drawn per sample from the sample's own generator)."""

    def __init__(self, frames: int, grid: tuple[int, int, int], target_ratio: float,
                 block_scale: tuple[float, float], block_aspect: tuple[float, float]):
        super().__init__(frames)
        self.grid, self.ratio = grid, target_ratio
        self.scale, self.aspect = tuple(block_scale), tuple(block_aspect)
        spatial = grid[1] * grid[2]
        n = int(round(spatial * target_ratio))
        if not 0 < n < spatial:
            raise ValueError(f"pretrain.jepa.target_ratio ({target_ratio}) hides {n} of the {spatial} spatial "
                             f"positions of a {grid[1]}x{grid[2]} patch grid: need 0 < hidden < all")

    def collate(self, examples, rngs: list[np.random.Generator]) -> Batch:
        batch = stack(examples)
        masks = [multiblock_masks(1, self.grid, self.ratio, self.scale, self.aspect, rng) for rng in rngs]
        batch["keep"] = torch.cat([m.keep for m in masks])
        batch["masked"] = torch.cat([m.masked for m in masks])
        return batch


class JEPA(Objective):
    def __init__(self, encoder: VideoViT, predictor_dim: int, predictor_depth: int, predictor_heads: int,
                 ema_start: float, ema_end: float):
        super().__init__(encoder)
        self.predictor = Predictor(encoder.shape, predictor_dim, predictor_depth, predictor_heads)
        self.target = copy.deepcopy(encoder).requires_grad_(False)
        self.ema_start, self.ema_end = ema_start, ema_end
        self.momentum = ema_start

    def momentum_at(self, step: int, total: int) -> float:
        """Linear ramp: ema_start before the first update, ema_end at the last step."""
        return self.ema_start + (self.ema_end - self.ema_start) * min(1.0, step / max(1, total - 1))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        video = to_model_input(batch["clip"])
        return self.loss(video, TubeMasks(batch["keep"], batch["masked"])), {"ema_momentum": self.momentum}

    def loss(self, video: torch.Tensor, masks: TubeMasks) -> torch.Tensor:
        """L1 between predicted and layer-normed target features of the masked tokens (a scalar)."""
        pred = self.predictor(self.encoder(video, keep=masks.keep), masks)
        with torch.no_grad():
            h = self.target(video).float()
            h = F.layer_norm(h, h.shape[-1:])
            h = torch.gather(h, 1, masks.masked[..., None].expand(-1, -1, h.shape[-1]))
        return (pred.float() - h).abs().mean()

    @torch.no_grad()
    def after_step(self, step: int, total: int) -> None:
        self.momentum = m = self.momentum_at(step, total)
        target, online = list(self.target.parameters()), list(self.encoder.parameters())
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, online, alpha=1.0 - m)
