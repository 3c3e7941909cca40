"""Hugging Face transformers' VJEPA2Model (V-JEPA 2's encoder) behind the evaluate contract:
`videossl evaluate --encoder videossl.adapters.hf_vjepa2:factory[=/local/weights/folder]`.

With a folder: `VJEPA2Model.from_pretrained(folder, local_files_only=True)` (no hub download); clips go
in at the model's native input: `frames_per_clip` frames of `crop_size`^2, ImageNet-normalised (as its
video processor does). Only the encoder runs (`skip_predictor`); its tokens come back as
[B, t, h, w, D] for the probes. Without a folder: a small, randomly initialised V-JEPA 2 built for
the benchmark's clip shape (what the test runs).
"""
from __future__ import annotations

import torch

from videossl.adapters.hf_common import VideoTokens

# the random smoke-test model: small enough for a CPU test
TINY = {"patch_size": 8, "tubelet_size": 2, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "pred_hidden_size": 32, "pred_num_hidden_layers": 1, "pred_num_attention_heads": 2}


class VJEPA2Tokens(VideoTokens):
    SHAPE = ("frames_per_clip", "crop_size", "tubelet_size", "patch_size")

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values_videos=x, skip_predictor=True).last_hidden_state  # the encoder only


def factory(spec, arg: str | None) -> torch.nn.Module:
    from transformers import VJEPA2Config, VJEPA2Model

    return VJEPA2Tokens.build(VJEPA2Model, VJEPA2Config, spec, arg, TINY)
