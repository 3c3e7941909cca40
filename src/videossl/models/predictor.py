"""The narrow transformer that MAE's decoder and V-JEPA's predictor share: the encoder's visible
(context) tokens plus one learned mask token per hidden position, each with its fixed position
embedding, in; a prediction for every hidden token out (pixels for MAE, features for V-JEPA)."""
from __future__ import annotations

import torch
from torch import nn

from videossl.masks import TubeMasks
from videossl.models.vit import Block, VitShape, init_weights, sincos_3d, take_tokens


class MaskTokenPredictor(nn.Module):
    def __init__(self, shape: VitShape, dim: int, depth: int, heads: int, out_dim: int):
        super().__init__()
        self.embed = nn.Linear(shape.dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_3d(shape.grid, dim)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, shape.mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        self.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, visible: torch.Tensor, masks: TubeMasks) -> torch.Tensor:
        """[B, N_keep, D_encoder] -> predictions for the masked tokens only: [B, N_mask, out_dim]."""
        x = self.embed(visible)
        b, n_keep, d = x.shape
        n_mask = masks.masked.shape[1]
        pos = self.pos_embed.expand(b, -1, -1)
        x = x + take_tokens(pos, masks.keep)
        m = self.mask_token.expand(b, n_mask, d) + take_tokens(pos, masks.masked)
        x = torch.cat([x, m], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, n_keep:]))
