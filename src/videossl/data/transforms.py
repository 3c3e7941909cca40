"""Clip tensors for the model, and the temporal transforms the benchmark is built from."""
from __future__ import annotations

import numpy as np
import torch

# Pixel normalisation of model inputs (Kinetics statistics, as in VideoMAE): one constant for all models.
PIXEL_MEAN = (0.45, 0.45, 0.45)
PIXEL_STD = (0.225, 0.225, 0.225)


def to_model_input(frames: torch.Tensor, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> normalised float [B, 3, T, H, W], on `device` (default: where it is).

    The uint8 tensor travels to the device first (4x fewer bytes) and is normalised there.
    """
    if device is not None:
        frames = frames.to(device, non_blocking=True)
    x = frames.permute(0, 4, 1, 2, 3).to(dtype).div_(255.0)
    mean = torch.tensor(PIXEL_MEAN, device=x.device, dtype=dtype).view(1, 3, 1, 1, 1)
    std = torch.tensor(PIXEL_STD, device=x.device, dtype=dtype).view(1, 3, 1, 1, 1)
    return x.sub_(mean).div_(std)


def resize_clip(x: torch.Tensor, frames: int, size: int) -> torch.Tensor:
    """Model input [B, 3, T, H, W] at another clip shape -> [B, 3, frames, size, size] (trilinear: time
    and space resampled together); unchanged when it already has it. How an encoder reads a dataset
    ingested at another clip length or resolution than it takes (its position table is fixed)."""
    if x.shape[2:] == (frames, size, size):
        return x
    return torch.nn.functional.interpolate(x, size=(frames, size, size), mode="trilinear", align_corners=False)


def reverse(frames: np.ndarray) -> np.ndarray:
    """The clip played backwards (time axis 0)."""
    return np.ascontiguousarray(frames[::-1])


