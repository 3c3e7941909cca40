"""Hugging Face transformers' VideoMAEModel behind the evaluate contract:
`videossl evaluate --encoder videossl.adapters.hf_videomae:factory[=/local/weights/folder]`.

With a folder: `VideoMAEModel.from_pretrained(folder, local_files_only=True)` (no hub download);
clips are resized in time and space to the model's num_frames and image_size, and renormalised from
videossl's mean/std to the model's (ImageNet, as its image processor uses). Without one: a small,
randomly initialised VideoMAE built for the benchmark's clip shape (a smoke test of the contract).
"""
from __future__ import annotations

import torch

from videossl.adapters.hf_common import VideoTokens

# the random smoke-test model: small enough for a CPU test
TINY = {"patch_size": 8, "tubelet_size": 2, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}


class VideoMAETokens(VideoTokens):
    SHAPE = ("num_frames", "image_size", "tubelet_size", "patch_size")

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).last_hidden_state


def factory(spec, arg: str | None) -> torch.nn.Module:
    from transformers import VideoMAEConfig, VideoMAEModel

    return VideoMAETokens.build(VideoMAEModel, VideoMAEConfig, spec, arg, TINY)
