"""The pretraining objective's own heads, zero-shot: arrow of time, playback speed, frame order.

The pretext objective trains linear heads on exactly these labels (objectives/pretext.py). A probe
on such a trained-on label re-reads, from frozen features, a classifier the objective has already
fit, so its accuracy says little about what the encoder learnt beyond its training signal. Scoring
the objective's own heads, with no probe fit at all, makes that visible beside the probe's number.

The exported model (`encoder.pt`, models/checkpoint.export_state) holds the objective's parameters
without the shared encoder; `load_objective` rebuilds the objective from the exported config and
loads both. Labels as in training: arrow 1 = backwards, speed = index into the sorted `speeds`,
shuffle 1 = shuffled.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from videossl import objectives
from videossl.config import Config, validate_tree
from videossl.data.transforms import to_model_input
from videossl.models.checkpoint import CheckpointError, full_state, load_checkpoint
from videossl.models.vit import VideoViT, VitShape
from videossl.objectives.base import Objective, find_part
from videossl.objectives.pretext import Pretext, PretextRecipe


@dataclass(frozen=True)
class ObjectiveInfo:
    config: Config                 # the exported config, missing sections at their defaults
    variant: str                   # "video" or "frames"
    step: int
    speeds: list[int] | None       # frame steps the speed head's classes index (None: no pretext part)
    tasks: list[str] | None        # the pretext heads, in TASKS order (None: no pretext part)


def load_objective(path: str | os.PathLike) -> tuple[Objective, ObjectiveInfo]:
    """The exported model's whole objective (encoder and its own heads), in eval mode, on the CPU."""
    state = load_checkpoint(path)
    if "objective" not in state:
        raise CheckpointError(f"{path} was exported before objective heads were saved; re-run pretrain")
    exported = state["config"]
    # the sections the export leaves out take their defaults; their cross-section checks prove nothing
    cfg = validate_tree(exported, absent=tuple(k for k in Config.model_fields if k not in exported))
    objective, recipe = objectives.build(cfg, VideoViT(VitShape(**state["shape"])), state["variant"])
    objective.load_state_dict(full_state(objective, state["encoder"], state["objective"]))  # strict
    objective.eval()
    pretext = find_part(recipe, PretextRecipe)
    return objective, ObjectiveInfo(cfg, state["variant"], state["step"],
                                    list(pretext.speeds) if pretext else None,
                                    list(pretext.tasks) if pretext else None)


def pretext_heads(objective: Objective) -> dict[str, nn.Linear] | None:
    """{task: linear head} of the objective's pretext part, whatever the composition; None without one."""
    part = find_part(objective, Pretext)
    return dict(part.heads) if part is not None else None


def pretext_predictions(objective: Objective, clips: torch.Tensor, batch: int = 64) -> dict[str, np.ndarray]:
    """{task: argmax class per clip [B] int64} of the pretext heads on uint8 clips [B, T, H, W, 3],
    through the training input path (to_model_input, then embed_time over space, flattened)."""
    heads = pretext_heads(objective)
    if heads is None:
        raise ValueError(f"{type(objective).__name__} has no pretext heads")
    device = next(objective.encoder.parameters()).device
    out: dict[str, list[np.ndarray]] = {task: [] for task in heads}
    with torch.inference_mode():
        for i in range(0, len(clips), batch):
            feats = objective.encoder.embed_time(to_model_input(clips[i:i + batch], device)).flatten(1)
            for task, head in heads.items():
                out[task].append(head(feats).argmax(1).cpu().numpy())
    return {task: np.concatenate(parts) if parts else np.zeros(0, np.int64) for task, parts in out.items()}
