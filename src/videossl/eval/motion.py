"""Motion statistics: a hand-written, non-learned motion detector as a baseline featurizer.

Why it exists: a temporal task that these few numbers already solve says nothing about a video
model's grasp of time (direction, speed, acceleration of a translating pattern are all in here), so
a video model has to beat this baseline before its temporal scores mean anything. It is meant to be
honest and reasonably strong, not a strawman.

Frames are grey (mean of RGB, 0..255). For each consecutive pair (t, t+1) it measures:
- the global displacement (dy, dx) by phase correlation, on frames with the clip's static
  background (the per-pixel temporal median) removed and a 2D Hann window applied: the peak of
  the inverse FFT of the normalised cross-power spectrum, refined to sub-pixel by a 3-point
  parabola per axis. Positive dx: content moved right; positive dy: moved down;
- the peak's height: how much of the change one rigid shift explains (about 1 for a pure circular
  shift of a detailed image, 0 for a static pair);
- the RMS frame difference over each quadrant of a 2x2 grid and over the whole frame (grey levels).
That is p_t = [dy, dx, peak, e_q1..e_q4, e_all]; c_t = p_t - p_{t-1} (c_0 = 0) adds acceleration
and changes of energy. Token t = [p_t, c_t] (16 numbers), tokens [B, T-1, 16] in time order;
vectors are the tokens flattened in time order, [B, (T-1) * 16].

Limits: the median is the background only where a pixel shows background in most frames; a large
smooth object crawling under ~1 px per frame is partly taken for background, and its shift is
underestimated. With T = 2 the median is the mean of the two frames, so the displacement is only
meaningful from T = 3 on (the benchmark uses T = 8). The window pulls sub-pixel shifts slightly
towards 0 (~0.1 px at 2 px per frame on 32 x 32).
"""
from __future__ import annotations

import torch

from videossl.eval.features import FEATURE_VERSION, FeatureModel

PAIR_STATS = 8         # per pair: dy, dx, peak, 4 quadrant energies, whole-frame energy
TOKEN_DIM = 2 * PAIR_STATS  # p_t and its change c_t
WINDOW_PERIODIC = False  # symmetric Hann, zero on the border: hides the seam the FFT's wrap-around makes
# Whitening regulariser, relative to a pair's mean |cross-power|: frequencies where the clip has no
# energy (only uint8 rounding or codec noise) are damped instead of weighted like the real ones, which
# also widens the peak enough for the parabola (sub-pixel error 0.22 -> 0.15 px on smooth blobs).
CROSS_POWER_EPS = 0.1
ABS_EPS = 1e-12        # floor for an all-static pair (zero spectrum): its correlation is 0, its shift 0
MOTION_VERSION = 1     # bump when the statistics change: cached features then never match


def _hann2d(h: int, w: int) -> torch.Tensor:
    wy = torch.hann_window(h, periodic=WINDOW_PERIODIC, dtype=torch.float32)
    wx = torch.hann_window(w, periodic=WINDOW_PERIODIC, dtype=torch.float32)
    return wy[:, None] * wx[None, :]


def _parabolic(left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Sub-pixel offset of a parabola's vertex through (-1, left), (0, mid), (1, right)."""
    den = left - 2 * mid + right
    safe = den.abs() > 1e-12
    off = torch.where(safe, 0.5 * (left - right) / torch.where(safe, den, torch.ones_like(den)), torch.zeros_like(den))
    return off.clamp(-0.5, 0.5)  # the integer peak is the maximum, so the vertex lies within half a pixel


def _phase_correlation(frames: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W] windowed frames -> [B, T-1, 3]: (dy, dx, peak) of each frame relative to the one before."""
    b, t, h, w = frames.shape
    spec = torch.fft.rfft2(frames)  # each frame transformed once, for both of its pairs
    # conj(F_t) * F_t+1: if frame t+1 is frame t moved by d, the inverse transform peaks at +d
    cross = spec[:, :-1].conj() * spec[:, 1:]
    mag = cross.abs()
    eps = CROSS_POWER_EPS * mag.mean(dim=(2, 3), keepdim=True) + ABS_EPS
    corr = torch.fft.irfft2(cross / (mag + eps), s=(h, w)).reshape(b * (t - 1), h * w)
    flat = corr.argmax(dim=1, keepdim=True)  # first maximum on ties: deterministic
    py, px = flat // w, flat % w

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # the correlation is circular, so the neighbours of a border peak wrap around
        return corr.gather(1, (y % h) * w + x % w)

    peak = at(py, px)
    dy = _parabolic(at(py - 1, px), peak, at(py + 1, px))
    dx = _parabolic(at(py, px - 1), peak, at(py, px + 1))
    # shifts past half the size are negative ones that wrapped
    sy = torch.where(py > h // 2, py - h, py).to(torch.float32)
    sx = torch.where(px > w // 2, px - w, px).to(torch.float32)
    return torch.cat([sy + dy, sx + dx, peak], dim=1).view(b, t - 1, 3)


def _quadrant_rms(diff: torch.Tensor) -> torch.Tensor:
    """[B, P, H, W] frame differences -> [B, P, 5]: RMS over the 2x2 grid's quadrants in reading
    order (top-left, top-right, bottom-left, bottom-right), then over the whole frame."""
    h2, w2 = diff.shape[2] // 2, diff.shape[3] // 2
    sq = diff.square()
    quads = [sq[..., :h2, :w2], sq[..., :h2, w2:], sq[..., h2:, :w2], sq[..., h2:, w2:], sq]
    return torch.stack([q.mean(dim=(2, 3)) for q in quads], dim=2).sqrt()


def pair_statistics(grey: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W] grey frames (0..255) -> [B, T-1, 8]: p_t = [dy, dx, peak, e_q1..e_q4, e_all]."""
    grey = grey.to(torch.float32)
    if grey.ndim != 4 or grey.shape[1] < 2:
        raise ValueError(f"pair_statistics needs [B, T>=2, H, W] frames, got {tuple(grey.shape)}")
    # what does not move carries no motion: without this a static textured background pins the peak at 0
    ordered, n = grey.sort(dim=1).values, grey.shape[1]  # a sort, not torch.quantile: that caps its input size
    median = 0.5 * (ordered[:, (n - 1) // 2] + ordered[:, n // 2])
    moving = (grey - median[:, None]) * _hann2d(*grey.shape[2:])
    return torch.cat([_phase_correlation(moving), _quadrant_rms(grey[:, 1:] - grey[:, :-1])], dim=2)


def motion_featurize(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 clips [B, T, H, W, 3] -> (vectors [B, (T-1)*16], tokens [B, T-1, 16]), float32."""
    p = pair_statistics(clips.to(torch.float32).mean(dim=-1))
    c = torch.cat([torch.zeros_like(p[:, :1]), p[:, 1:] - p[:, :-1]], dim=1)
    tokens = torch.cat([p, c], dim=2).contiguous()
    return tokens.flatten(1), tokens


def motion_model() -> FeatureModel:
    return FeatureModel("motion", f"motion|v{MOTION_VERSION}|features-v{FEATURE_VERSION}", motion_featurize)
