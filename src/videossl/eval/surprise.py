"""Zero-shot surprise: how badly the objective's own predictor foresees what comes next.

Violation of expectation, as IntPhys scores intuitive physics and V-JEPA reads it from a predictor
with no probe: a model that predicts should be more surprised by the impossible members of a matched
set than by the possible ones. For each time slice after the first, the encoder sees the slices
before it and the objective's predictor fills in that slice: the MAE decoder its pixels, the JEPA
predictor the target encoder's features of the full clip. The error is the objective's own loss term
(objectives/mae.py, objectives/jepa.py). A clip's surprise is its largest error over those slices:
an impossible event happens at one moment, and averaging over the others would dilute it.

Objectives that do not predict (pretext, contrastive) have no surprise; the probes read them.
"""
from __future__ import annotations

import numpy as np
import torch

from videossl.data.transforms import to_model_input
from videossl.masks import next_slice_masks
from videossl.objectives.base import Combined, Objective
from videossl.objectives.jepa import JEPA
from videossl.objectives.mae import MAE

PREDICTIVE = (MAE, JEPA)


def predictive_part(objective: Objective) -> MAE | JEPA | None:
    """The objective's part that predicts masked tokens, whatever the composition; None without one."""
    if isinstance(objective, PREDICTIVE):
        return objective
    if isinstance(objective, Combined):
        return next((p for p in map(predictive_part, objective.parts.values()) if p is not None), None)
    return None


def clip_errors(part: MAE | JEPA, video: torch.Tensor, masks) -> torch.Tensor:
    """The objective's loss term per clip [B] for these masks."""
    return part.clip_errors(video, masks) if isinstance(part, MAE) else part.loss_parts(video, masks)[0]


def surprise(part: MAE | JEPA, clips: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Per uint8 clip [B, T, H, W, 3], its surprise [B]: the largest next-slice prediction error."""
    device = next(part.encoder.parameters()).device
    slices = part.encoder.shape.grid[0]
    if slices < 2:
        raise ValueError("surprise needs a video encoder with at least two time slices (a past and a future)")
    out = []
    with torch.inference_mode():
        for i in range(0, len(clips), batch):
            video = to_model_input(clips[i:i + batch], device)
            errors = torch.stack([clip_errors(part, video, next_slice_masks(len(video), part.encoder.shape.grid, s))
                                  for s in range(1, slices)], 1)
            out.append(errors.max(1).values.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
