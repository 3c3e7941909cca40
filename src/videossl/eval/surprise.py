"""Zero-shot surprise: how badly the objective's own predictor foresees the second half of a clip.

Violation of expectation, as IntPhys scores intuitive physics and V-JEPA reads it from a predictor
with no probe: a model that predicts should be more surprised by the impossible members of a matched
set than by the possible ones. The encoder sees the first half of the clip's time slices and the
objective's predictor fills in the second half (`masks.future_masks`): the MAE decoder its pixels,
the JEPA predictor the target encoder's features of the full clip. A clip's surprise is that error,
the objective's own loss term (objectives/mae.py, objectives/jepa.py). A matched set is spliced near
the middle of its clips, so what comes out from behind a screen is in the half being predicted.

The question is the one `pretrain.masking: future` trains; a predictor trained on tube masks is
asked it too (it has never predicted a whole future). Objectives that do not predict (pretext,
contrastive) have no surprise; the probes read them.

Beside it, the surprise of a predictor that learned nothing (`held_frame_surprise`): the last frame of
the same first half held through the second, its pixel error. A set whose impossible members are
easier to predict in pixels than its possible ones shows here, and a learned predictor's surprise
means something only where it beats this one (on `future`'s test sets it reads 0.48, and mae/future
falls below it with compute: docs/study.md).
"""
from __future__ import annotations

import numpy as np
import torch

from videossl.data.transforms import to_model_input
from videossl.masks import future_context, future_masks
from videossl.objectives.base import Objective, find_part
from videossl.objectives.jepa import JEPA
from videossl.objectives.mae import MAE

PREDICTIVE = (MAE, JEPA)


def predictive_part(objective: Objective) -> MAE | JEPA | None:
    """The objective's part that predicts masked tokens, whatever the composition; None without one."""
    return find_part(objective, PREDICTIVE)


def clip_errors(part: MAE | JEPA, video: torch.Tensor, masks) -> torch.Tensor:
    """The objective's loss term per clip [B] for these masks."""
    return part.clip_errors(video, masks) if isinstance(part, MAE) else part.loss_parts(video, masks)[0]


def surprise(part: MAE | JEPA, clips: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Per uint8 clip [B, T, H, W, 3], its surprise [B]: the error of its second half predicted from its first."""
    device = next(part.encoder.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(clips), batch):
            video = to_model_input(clips[i:i + batch], device)
            out.append(clip_errors(part, video, future_masks(len(video), part.encoder.shape.grid)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def held_frame_surprise(clips: torch.Tensor, part: MAE | JEPA) -> np.ndarray:
    """Per uint8 clip [B, T, H, W, 3], the surprise of holding the last frame `part`'s encoder sees (its
    first `future_context` time slices) through the frames it is asked to foresee: their mean squared
    pixel difference from it, pixels in [0, 1]."""
    shape = part.encoder.shape
    seen = future_context(shape.grid) * shape.tubelet
    x = clips.float() / 255.0
    return ((x[:, seen:] - x[:, seen - 1:seen]) ** 2).mean(dim=(1, 2, 3, 4)).numpy()
