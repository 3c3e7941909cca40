"""The codec shortcut in real-video arrow of time: a control that removes it, a probe that detects it.

Reversing decoded H.264 reverses each GOP's quality pattern, so a probe can learn the direction of the
codec instead of time. `codec_control` removes it with two order-free steps (so control(reverse(x)) ==
reverse(control(x)) exactly): a spatial low-pass (`sigma`) takes away the codec's high-frequency error,
then every pixel that never leaves its temporal median by more than `tau` grey levels is frozen to it,
so a clip without motion equals its own reverse. `quality_features` is the detector that shows the
shortcut: per spatial-frequency band, how each frame's energy changes from frame to frame. What was
tried, what failed and what the defaults cost: docs/measurements.md.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

GAUSS_RADIUS_SIGMAS = 3.0  # kernel half-width in sigmas: the truncated tails weigh < 0.3%

# Radial band edges in cycles/pixel for `quality_features`: octaves from the coarsest structure to
# the corners of the spectrum (0.5 * sqrt(2) ~ 0.71), so every band a codec can touch is seen.
BAND_EDGES = (0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 0.75)



def gaussian_lowpass(planes: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of float [N, H, W] planes, reflect padding (no dark border)."""
    radius = max(1, int(np.ceil(GAUSS_RADIUS_SIGMAS * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(planes.dtype)
    y = planes[:, None]
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return y[:, 0]


def codec_control_batch(clips: torch.Tensor, sigma: float, tau: float) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> uint8 [B, T, H, W, 3]: low-passed, pixels without motion frozen.

    Only order-free statistics of each clip are used (a per-frame filter, the temporal median, the
    largest deviation from it), so reversing a clip before or after the control gives the same
    frames, bit for bit."""
    b, t, h, w, c = clips.shape
    low = gaussian_lowpass(clips.permute(0, 1, 4, 2, 3).reshape(-1, h, w).float(), sigma)
    low = low.reshape(b, t, c, h, w)
    median = low.median(dim=1, keepdim=True).values  # a function of the sorted values: order-free
    moving = (low - median).abs().amax(dim=(1, 2), keepdim=True) > tau  # [B, 1, 1, H, W], any channel
    out = torch.where(moving, low, median).round_().clamp_(0, 255).to(torch.uint8)
    return out.permute(0, 1, 3, 4, 2).contiguous()


def codec_control(frames: np.ndarray, sigma: float, tau: float) -> np.ndarray:
    """One clip, uint8 [T, H, W, 3] -> uint8 [T, H, W, 3]; see `codec_control_batch`."""
    clip = torch.from_numpy(np.ascontiguousarray(frames))[None]
    return codec_control_batch(clip, sigma, tau)[0].numpy()


def band_log_energy(planes: torch.Tensor) -> torch.Tensor:
    """float [N, H, W] -> [N, bands]: log(1 + mean power) per radial band of `BAND_EDGES`
    (the mean grey level removed first, so brightness does not count as structure)."""
    h, w = planes.shape[-2:]
    power = torch.fft.rfft2(planes - planes.mean((-2, -1), keepdim=True), norm="ortho").abs().pow(2)
    radius = (torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2).sqrt()
    bands = []
    for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:]):
        mask = ((radius >= lo) & (radius < hi)).to(power.dtype)
        bands.append((power * mask).sum((-2, -1)) / mask.sum())
    return torch.log1p(torch.stack(bands, -1))


def quality_features(clips: torch.Tensor) -> torch.Tensor:
    """A codec-quality featurizer: uint8 [B, T, H, W, 3] -> [B, (T-1) * bands].

    Per band, the frame-to-frame changes of log energy, sorted. Forward keyframe pumping gives many
    small rises and one large fall; reversed, many small falls and one large rise; sorting makes
    that visible to a linear probe wherever the keyframe falls in the clip. Appearance (the energy
    level itself) is left out, so on still content these features see the codec and nothing else."""
    b, t, h, w, _ = clips.shape
    gray = clips.float().mean(-1).reshape(b * t, h, w)
    energy = band_log_energy(gray).reshape(b, t, -1)
    steps = energy[:, 1:] - energy[:, :-1]
    return steps.sort(dim=1).values.flatten(1)
