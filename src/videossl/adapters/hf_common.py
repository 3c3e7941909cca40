"""What every Hugging Face video encoder behind the evaluate contract does to a benchmark clip: from
videossl's normalisation to the model's, and to the model's own frames and size (its native input)."""
from __future__ import annotations

import abc

import torch

from videossl.data.transforms import resize_clip

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
        return resize_clip(x * self.scale + self.shift, self.frames, self.size)


class VideoTokens(torch.nn.Module, abc.ABC):
    """A Hugging Face video ViT as the contract wants it: [B, 3, T, H, W] (videossl-normalised) in, its
    last hidden states as [B, t, h, w, D] out. A subclass names its config's shape fields (`SHAPE`:
    frames, size, tubelet, patch) and says how its model is called (`hidden`)."""

    SHAPE: tuple[str, str, str, str]

    def __init__(self, model, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.frames, self.size, self.tubelet, self.patch = (getattr(model.config, f) for f in self.SHAPE)
        self.native = NativeInput(mean, std, self.frames, self.size)

    @abc.abstractmethod
    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] at the native input -> the model's last hidden states [B, N, D]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden(self.native(x).transpose(1, 2))  # both take [B, T, 3, H, W]
        t, s = self.frames // self.tubelet, self.size // self.patch
        return hidden.reshape(hidden.shape[0], t, s, s, hidden.shape[-1])

    @classmethod
    def build(cls, model_class, config_class, spec, arg: str | None, tiny: dict) -> "VideoTokens":
        """From a local folder of weights (`arg`: no hub download), or without one a small, randomly
        initialised model for the benchmark's clip shape (seeded: the same one every time)."""
        if arg:
            model = model_class.from_pretrained(arg, local_files_only=True)
        else:
            torch.manual_seed(0)
            frames, size = cls.SHAPE[:2]
            model = model_class(config_class(**{frames: spec.frames, size: spec.size}, **tiny))
        return cls(model.eval(), spec.mean, spec.std)
