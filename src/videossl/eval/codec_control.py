"""The codec shortcut in real-video arrow of time: a control that removes it, a probe that detects it.

Why a control is needed. Decoded H.264 carries a quality pattern tied to each group of pictures
(GOP): a rate-controlled stream spends its bits unevenly, so frame quality drifts inside a GOP and
jumps at every keyframe. Played backwards, that pattern runs backwards too, and a probe can learn
the direction of the *codec* instead of the direction of *time*. Under strict constant-bitrate
control the effect is strongest on still content ("keyframe pumping": the keyframe is starved and
blurry, later P-frames refine the unchanged picture): measured on a still 64x64 scene at 30 kbps,
GOP 24, the energy above 0.25 cycles/pixel climbs from 0.51 to 1.12 of its mean within each GOP,
and `quality_features` + a linear probe tell forward from backward on held-out videos with
accuracy 1.00 (n=128; 0.89 at 40 kbps, 0.77 at 50 kbps).

What does not work (measured with that probe on those videos, chance = 0.5). The stored frames
already went through the source codec and resampling, so any per-frame operation applied
identically to every frame (a re-encode, a blur) commutes with reversal: the per-frame quality
differences survive it, only scaled. Intra-only H.264 re-encoding at QP 30 / 40 left 0.98 / 0.85;
a Gaussian low-pass of sigma 2 px left 0.59 (0.65 for a probe on the band energies of frame
differences); blur + intra QP 40 left 0.55-0.60; re-encoding the clip in display order with an inter
codec at QP 30 / 40 (GOP starting at the clip's first frame, as "re-encode both directions
identically" suggests) left 0.72 / 0.58 (n=192, 12 still videos at 30 kbps, leave-one-video-out).
Keyframe-only sampling is not available: ingest resamples to a fixed fps and keeps no frame types,
and two of the three bundled samples have a single keyframe.

The control (`codec_control`). Two steps, both blind to the order of the frames, so that
control(reverse(x)) == reverse(control(x)) exactly and applying it before or after reversing a clip
is the same thing:
1. Spatial low-pass (Gaussian, `sigma` px): codec error, and its swing inside a GOP, is
   concentrated in high spatial frequencies. Measured on the same stills (error energy / signal
   energy per band against the pristine still, keyframe vs the last P-frame of its GOP): 0.72-1.06
   vs 0.37-0.62 above 0.36 cycles/px, 0.08-0.13 vs 0.02-0.03 at 0.08-0.16, <= 0.02 below 0.08.
   The low-pass shrinks the swing but does not remove it (0.59 above), hence step 2.
2. Freeze what does not move: every pixel whose low-passed value never leaves the clip's temporal
   median by more than `tau` grey levels is set to that median for the whole clip. A pixel that
   does not move carries no arrow of time, only codec flicker (and sensor noise); where the scene
   moves by more than `tau`, the low-passed frames are kept. A clip without motion becomes exactly
   constant, so it is identical to its own reverse and no probe can score above chance on it.

Defaults, and what they cost. `tau` must exceed the codec flicker left after the low-pass. The
worst stream we built (64 px source ingested at its own size, 30 kbps constant bitrate, keyframe
every 24 frames) flickers by at most 27.8 grey levels at sigma 2 over 40 textures (25.6 at 40 kbps);
`CONTROL_TAU = 30` covers it. Sources downscaled by ingest flicker far less (128 px at 120 kbps:
8.8; 256 px at 300 kbps: 5.1), so a data set of ordinary footage can use tau ~ 10. The price is
weak motion, measured on the default data set (`data/ingest`):
- bundled real samples: 82% of clip pixels frozen at tau 30 (19% of clips entirely), 67% at tau 12;
- synthetic world, where no codec shortcut shows (its own encoder, crf 18, on still scenes: the
  quality probe scores 0.53 [0.46, 0.60], n=192): raw-pixel arrow of time 0.65 [0.57, 0.72] without
  the control, 0.60 with the low-pass alone, 0.60 at tau 12, 0.56 at tau 30 (n=156): slow,
  low-contrast change (spreading dye, for one) can stay under `tau` and freeze.
So report scores with and without the control side by side; neither alone is the answer.

`quality_features` is the detector used to show all this: it sees only how each frame's energy per
spatial-frequency band changes from frame to frame (sorted, so it does not depend on where in the
clip a keyframe falls). On a clip without motion that is exactly the codec pattern.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CONTROL_SIGMA = 2.0  # px at stored size: passes 60% at 0.08 cycles/px, 13% at 0.16, < 1% above 0.25
CONTROL_TAU = 30.0   # grey levels: above the largest flicker measured after that low-pass (27.8)
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


def codec_control_batch(clips: torch.Tensor, sigma: float = CONTROL_SIGMA,
                        tau: float = CONTROL_TAU) -> torch.Tensor:
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


def codec_control(frames: np.ndarray, sigma: float = CONTROL_SIGMA, tau: float = CONTROL_TAU) -> np.ndarray:
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
