"""Token masks, built on the CPU side in the collate function (as in V-JEPA), not in the model.

Tube masking (VideoMAE): one random set of spatial positions is hidden in every time slice, so a
masked patch cannot be copied from the same place in the neighbouring frame.

Multi-block masking (V-JEPA): the union of several spatial blocks of random scale and aspect ratio,
extended over all time slices (tube blocks), is the target; the rest is the context.

Future masking (V-JEPA's temporal masking, in its simplest form): the first half of the time slices
is the context, the second half the target: the predictor learns what comes next. Every sample
hides exactly the same number of tokens, so a batch stacks without padding, and each sample's mask
depends only on its own generator (N ranks draw what one rank would).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TubeMasks:
    keep: torch.Tensor    # [B, N_keep] token indices the encoder sees, sorted
    masked: torch.Tensor  # [B, N_mask] token indices the decoder must reconstruct, sorted


def tube_masks(batch: int, grid: tuple[int, int, int], ratio: float, rng: np.random.Generator) -> TubeMasks:
    t, h, w = grid
    spatial = h * w
    n_mask = int(round(spatial * ratio))
    if not 0 < n_mask < spatial:
        raise ValueError(f"mask ratio {ratio} hides {n_mask} of {spatial} spatial positions: need 0 < hidden < all")
    order = np.argsort(rng.random((batch, spatial)), axis=1)
    hidden = np.sort(order[:, :n_mask], axis=1)
    visible = np.sort(order[:, n_mask:], axis=1)
    offsets = (np.arange(t) * spatial)[None, :, None]  # same positions in every time slice

    def tubes(pos: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((pos[:, None, :] + offsets).reshape(batch, -1))

    return TubeMasks(keep=tubes(visible), masked=tubes(hidden))


def multiblock_masks(batch: int, grid: tuple[int, int, int], ratio: float, scale: tuple[float, float],
                     aspect: tuple[float, float], rng: np.random.Generator) -> TubeMasks:
    """V-JEPA masks: `masked` = a union of tube blocks covering exactly round(ratio * h * w) spatial
    positions; `keep` = the context (all the other tokens).

    Blocks (area `scale` x h*w, aspect ratio h/w log-uniform in `aspect`, random position) are added
    until the count is reached; the last block is cut in raster order so the count is exact.
    """
    t, h, w = grid
    spatial = h * w
    n_mask = int(round(spatial * ratio))
    if not 0 < n_mask < spatial:
        raise ValueError(f"target ratio {ratio} hides {n_mask} of {spatial} spatial positions: need 0 < hidden < all")
    offsets = (np.arange(t) * spatial)[:, None]  # same spatial positions in every time slice
    keeps, targets = [], []
    for _ in range(batch):
        hidden = np.zeros((h, w), dtype=bool)
        count = 0
        while count < n_mask:
            area = rng.uniform(*scale) * spatial
            ar = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))
            bh = int(np.clip(round(np.sqrt(area * ar)), 1, h))
            bw = int(np.clip(round(np.sqrt(area / ar)), 1, w))
            top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            block = np.zeros((h, w), dtype=bool)
            block[top:top + bh, left:left + bw] = True
            new = np.flatnonzero(block & ~hidden)[: n_mask - count]  # raster order: the cut stays compact
            hidden.flat[new] = True
            count += len(new)
        flat = hidden.reshape(-1)
        targets.append((np.flatnonzero(flat)[None] + offsets).reshape(-1))
        keeps.append((np.flatnonzero(~flat)[None] + offsets).reshape(-1))
    return TubeMasks(keep=torch.from_numpy(np.stack(keeps)), masked=torch.from_numpy(np.stack(targets)))



def future_context(grid: tuple[int, int, int]) -> int:
    """Time slices a future mask shows: the first half (rounded down, at least one)."""
    return max(1, grid[0] // 2)


def future_masks(batch: int, grid: tuple[int, int, int]) -> TubeMasks:
    """The past sees, the future is hidden: `keep` = every token of the first `future_context` time
    slices, `masked` = every token of the later ones (tokens are in (t, h, w) order). The same for every
    sample. Trains a predictor to foresee (`pretrain.masking: future`) and asks it what it expected
    at evaluation (eval/surprise.py)."""
    t, h, w = grid
    if t < 2:
        raise ValueError(f"future masks need at least two time slices (a past and a future), got {t}")
    cut = future_context(grid) * h * w
    keep = torch.arange(cut).expand(batch, -1).contiguous()
    masked = torch.arange(cut, t * h * w).expand(batch, -1).contiguous()
    return TubeMasks(keep=keep, masked=masked)
