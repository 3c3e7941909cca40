"""Token masks, built on the CPU side in the collate function (as in V-JEPA), not in the model.

Tube masking (VideoMAE): one random set of spatial positions is hidden in every time slice, so a
masked patch cannot be copied from the same place in the neighbouring frame.
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
