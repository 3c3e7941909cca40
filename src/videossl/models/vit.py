"""A video ViT: tubelet embedding, fixed 3D sin-cos positions, pre-norm blocks with SDPA attention.

`encoder(video[B, C, T, H, W], keep=None) -> tokens[B, N, D]`. With `keep` (token indices per
sample) only those tokens are embedded and attended, which is what makes MAE cheap. The frame
encoder of the bag-of-frames baseline is the same class built with frames=1, tubelet=1.

Attention is joint over space and time; with `VitShape.causal_time` a token attends only to tokens
of its own time slice and earlier ones (a boolean mask from the tokens' time indices, so it follows
the kept tokens when `keep` is given).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VitShape:
    frames: int
    img_size: int
    patch: int
    tubelet: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    causal_time: bool = False  # attention to the same and earlier time slices only (default: joint)

    @property
    def grid(self) -> tuple[int, int, int]:
        return self.frames // self.tubelet, self.img_size // self.patch, self.img_size // self.patch

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_dim(self) -> int:
        return self.tubelet * self.patch * self.patch * 3

    def as_dict(self) -> dict:
        return asdict(self)


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    omega = 1.0 / (10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2)))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """[t*h*w, dim]: a third of the channels (rounded to even) encodes each axis; pads with zeros."""
    t, h, w = grid
    part = (dim // 3) // 2 * 2
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat([sincos_1d(tt.flatten(), part), sincos_1d(hh.flatten(), part), sincos_1d(ww.flatten(), part)], 1)
    return F.pad(emb, (0, dim - emb.shape[1]))


def take_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[B, N, D] at per-sample token indices idx[B, K] -> [B, K, D] (jepa's `apply_masks`)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


def pool_space(tokens: torch.Tensor, time_slices: int) -> torch.Tensor:
    """[B, t*h*w, D] -> [B, t, D]: each time slice's tokens averaged, in time order."""
    return tokens.view(tokens.shape[0], time_slices, -1, tokens.shape[-1]).mean(2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v. SDPA (flash kernels) except on a CPU under bf16 autocast: there the
    CPU flash kernel's backward is slower in bf16 than two batched bf16 matmuls on the AMX units
    (measured: docs/measurements.md)."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`attn_mask`: boolean, True = may attend; [N, N] or [B, 1, N, N]."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = attend(q, k, v, attn_mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class VideoViT(nn.Module):
    def __init__(self, shape: VitShape):
        super().__init__()
        self.shape = shape
        self.patch_embed = nn.Conv3d(3, shape.dim, kernel_size=(shape.tubelet, shape.patch, shape.patch),
                                     stride=(shape.tubelet, shape.patch, shape.patch))
        self.register_buffer("pos_embed", sincos_3d(shape.grid, shape.dim)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(shape.dim, shape.heads, shape.mlp_ratio) for _ in range(shape.depth))
        self.norm = nn.LayerNorm(shape.dim)
        self.apply(init_weights)

    def forward(self, video: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if keep is None:
            x = self.patch_embed(video).flatten(2).transpose(1, 2) + self.pos_embed  # [B, N, D], (t, h, w) order
        else:
            x = self.embed_visible(video, keep)
        mask = self.time_mask(keep, x.device) if self.shape.causal_time and self.shape.grid[0] > 1 else None
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def embed_visible(self, video: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Embed only the kept tubelets: [B, N_keep, D]. The tubelet embedding is a linear map of each
        flattened tubelet (the Conv3d's weights, C-t-p-p order), so at a 90% mask this skips 90% of
        the embedding work that a convolution over the whole clip would do."""
        s = self.shape
        b, c, _, _, _ = video.shape
        t, h, w = s.grid
        tubes = video.reshape(b, c, t, s.tubelet, h, s.patch, w, s.patch).permute(0, 2, 4, 6, 1, 3, 5, 7)
        tubes = tubes.reshape(b, t * h * w, -1)
        x = F.linear(take_tokens(tubes, keep), self.patch_embed.weight.flatten(1), self.patch_embed.bias)
        return x + take_tokens(self.pos_embed.expand(b, -1, -1), keep)

    def time_mask(self, keep: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """Causal-in-time attention mask (True = may attend): [N, N], or [B, 1, N_keep, N_keep] with `keep`."""
        per_slice = self.shape.grid[1] * self.shape.grid[2]
        t = (keep if keep is not None else torch.arange(self.shape.num_tokens, device=device)) // per_slice
        mask = t[..., None, :] <= t[..., :, None]  # [.., query, key]: the key's slice is not later
        return mask[:, None] if keep is not None else mask

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """Pooled embedding [B, D]: the mean of all tokens."""
        return self.forward(video).mean(1)

    def embed_time(self, video: torch.Tensor) -> torch.Tensor:
        """Tokens mean-pooled over space only, in time order: [B, T/tubelet, D]."""
        return pool_space(self.forward(video), self.shape.grid[0])


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv3d):
        # like a linear layer on the flattened patch (MAE's choice)
        nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
        nn.init.zeros_(m.bias)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def flops_per_clip(shape: VitShape, tokens: int | None = None) -> float:
    """Forward matmul FLOPs of the encoder for one clip (2 * MACs), attention included."""
    n = tokens or shape.num_tokens
    d, hidden = shape.dim, int(shape.dim * shape.mlp_ratio)
    per_block = 2 * n * (3 * d * d + d * d + 2 * d * hidden) + 2 * 2 * n * n * d
    return shape.depth * per_block + 2 * n * shape.patch_dim * d
