"""Hugging Face transformers' VideoMAEModel behind the evaluate contract:
`videossl evaluate --encoder videossl.adapters.hf_videomae:factory[=/local/weights/folder]`.

With a folder: `VideoMAEModel.from_pretrained(folder, local_files_only=True)` (no hub download);
clips are resized in time and space to the model's num_frames and image_size, and renormalised from
videossl's mean/std to the model's (ImageNet, as its image processor uses). Without one: a small,
randomly initialised VideoMAE built for the benchmark's clip shape (a smoke test of the contract).
"""
from __future__ import annotations

import torch

from videossl.adapters.hf_common import NativeInput
# the random smoke-test model: small enough for a CPU test
TINY = {"patch_size": 8, "tubelet_size": 2, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}


class VideoMAETokens(torch.nn.Module):
    """[B, 3, T, H, W] (videossl-normalised) -> last hidden states as [B, t, h, w, D]."""

    def __init__(self, model, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        c = model.config
        self.frames, self.size, self.tubelet, self.patch = c.num_frames, c.image_size, c.tubelet_size, c.patch_size
        self.native = NativeInput(mean, std, self.frames, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.native(x)  # videossl's normalisation -> the model's, at its frames and size
        hidden = self.model(pixel_values=x.transpose(1, 2)).last_hidden_state  # VideoMAE takes [B, T, 3, H, W]
        t, s = self.frames // self.tubelet, self.size // self.patch
        return hidden.reshape(hidden.shape[0], t, s, s, hidden.shape[-1])


def factory(spec, arg: str | None) -> torch.nn.Module:
    from transformers import VideoMAEConfig, VideoMAEModel

    if arg:
        model = VideoMAEModel.from_pretrained(arg, local_files_only=True)
    else:
        torch.manual_seed(0)
        model = VideoMAEModel(VideoMAEConfig(image_size=spec.size, num_frames=spec.frames, **TINY))
    return VideoMAETokens(model.eval(), spec.mean, spec.std)
