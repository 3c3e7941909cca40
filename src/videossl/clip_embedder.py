"""The registered model: decoded uint8 frames in, the benchmark's time-ordered embedding out.

`register` logs it (videossl.registered_model: safetensors weights, `mlflow.pyfunc.load_model`) and
`videossl.embed` runs it, so a user of either gets the preprocessing training used
(`to_model_input`: channels first, [0, 1], per-channel mean/std) and the vector the probes read
(tokens pooled over space, time slices concatenated in order: a clip and its reverse differ).
Decoding, resampling to the training fps and resizing stay outside (`videossl.embed` does them as
ingest does), because they need a video decoder, which the model's requirements leave out.
"""
from __future__ import annotations

import torch
from torch import nn

from videossl.data.transforms import to_model_input
from videossl.models.vit import VideoViT


class ClipEmbedder(nn.Module):
    def __init__(self, encoder: VideoViT):
        super().__init__()
        self.encoder = encoder

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """One clip: [frames, size, size, RGB], uint8."""
        s = self.encoder.shape
        return s.frames, s.img_size, s.img_size, 3

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 clips [B, T, S, S, 3] -> float32 [B, T / tubelet * D]."""
        if clips.ndim != 5 or tuple(clips.shape[1:]) != self.input_shape or clips.dtype != torch.uint8:
            # position embeddings are fixed at training time: another size or length is refused, not guessed
            raise ValueError(f"clips of shape {tuple(clips.shape)} ({clips.dtype}): this encoder takes uint8 "
                             f"[B, {', '.join(map(str, self.input_shape))}] (frames, height, width, RGB)")
        return self.encoder.embed_time(to_model_input(clips)).float().flatten(1)
