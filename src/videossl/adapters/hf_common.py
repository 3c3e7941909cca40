"""What every Hugging Face video encoder behind the evaluate contract does to a benchmark clip: from
videossl's normalisation to the model's, and to the model's own frames and size (its native input)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# the image processors' normalisation of VideoMAE and V-JEPA 2 (ImageNet)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class NativeInput(torch.nn.Module):
    """[B, 3, T, H, W] (videossl-normalised) -> the same clip as the model was trained to take:
    renormalised to `model_mean`/`model_std`, resized in time and space to `frames` x `size`^2."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], frames: int, size: int,
                 model_mean: tuple[float, ...] = IMAGENET_MEAN, model_std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.frames, self.size = frames, size
        scale = torch.tensor(std) / torch.tensor(model_std)
        shift = (torch.tensor(mean) - torch.tensor(model_mean)) / torch.tensor(model_std)
        self.register_buffer("scale", scale.view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale + self.shift
        if x.shape[2:] != (self.frames, self.size, self.size):
            x = F.interpolate(x, size=(self.frames, self.size, self.size), mode="trilinear", align_corners=False)
        return x


class VideoTokens(torch.nn.Module):
    """A Hugging Face video ViT as the contract wants it: [B, 3, T, H, W] (videossl-normalised) in, its
    last hidden states as [B, t, h, w, D] out. A subclass says how its model is called (`hidden`)."""

    def __init__(self, model, mean: tuple[float, ...], std: tuple[float, ...], frames: int, size: int,
                 tubelet: int, patch: int) -> None:
        super().__init__()
        self.model = model
        self.frames, self.size, self.tubelet, self.patch = frames, size, tubelet, patch
        self.native = NativeInput(mean, std, frames, size)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] at the native input -> the model's last hidden states [B, N, D]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden(self.native(x).transpose(1, 2))  # both take [B, T, 3, H, W]
        t, s = self.frames // self.tubelet, self.size // self.patch
        return hidden.reshape(hidden.shape[0], t, s, s, hidden.shape[-1])
