"""V-JEPA and VideoMAE / VideoMAEv2 `.pth` checkpoints behind the evaluate contract:
`videossl evaluate --encoder videossl.adapters.pth:factory=/path/vitl16.pth.tar[,frames=16,size=224,heads=16]`.

The checkpoint's encoder (V-JEPA: its target encoder, as V-JEPA's own evals read it) is mapped onto
videossl's VideoViT with its own position table and LayerNorm eps (videossl.models.published), and fed
clips at its native input: `frames` x `size`^2 (default 16 x 224, what both families train at; a
stored position table must match), renormalised to ImageNet's mean/std, as their evals feed them.
Its last-layer tokens come back as [B, t, h, w, D], read by the probes like every encoder's.
"""
from __future__ import annotations

import torch

from videossl.adapters.hf_common import NativeInput
from videossl.eval.external import ExternalEncoderError
from videossl.models.published import PublishedCheckpointError, load_published

DEFAULT_FRAMES, DEFAULT_SIZE = 16, 224
OPTIONS = ("frames", "size", "heads")  # integers after the path: path,frames=16,size=224,heads=16


class PublishedTokens(torch.nn.Module):
    def __init__(self, vit: torch.nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.vit = vit
        self.native = NativeInput(mean, std, vit.shape.frames, vit.shape.img_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit(self.native(x))
        t, h, w = self.vit.shape.grid
        return tokens.view(tokens.shape[0], t, h, w, tokens.shape[-1])


def parse(arg: str | None) -> tuple[str, dict[str, int]]:
    """'path,frames=16,size=224' -> ('path', {'frames': 16, 'size': 224})."""
    if not arg:
        raise ExternalEncoderError("videossl.adapters.pth:factory needs a checkpoint: =/path/to/weights.pth")
    path, *rest = arg.split(",")
    options = {}
    for item in rest:
        key, _, value = item.partition("=")
        if key not in OPTIONS or not value.isdigit():
            raise ExternalEncoderError(f"videossl.adapters.pth: {item!r} is not one of {', '.join(o + '=N' for o in OPTIONS)}")
        options[key] = int(value)
    return path, options


def factory(spec, arg: str | None) -> torch.nn.Module:
    path, options = parse(arg)
    try:
        vit, _ = load_published(path, options.get("frames", DEFAULT_FRAMES), options.get("size", DEFAULT_SIZE),
                                options.get("heads"))
    except PublishedCheckpointError as e:
        raise ExternalEncoderError(f"videossl.adapters.pth: {e}") from None
    return PublishedTokens(vit, spec.mean, spec.std)
