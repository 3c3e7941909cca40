"""The motion-statistics baseline on synthetic clips whose motion is known: an object moving at a set
velocity over a textured static background, on a torus."""
import numpy as np
import pytest
import torch

from videossl.eval.features import FEATURE_VERSION
from videossl.eval.motion import MOTION_VERSION, TOKEN_DIM, motion_featurize, motion_model, pair_statistics

TOLERANCE_PX = 0.3


def smooth_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    """A periodic random texture, Gaussian low-passed (sigma in px), zero mean, unit std."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    x = np.fft.ifft2(np.fft.fft2(rng.normal(size=(h, w))) * np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))).real
    return (x - x.mean()) / x.std()


def fourier_shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """img moved by (dy, dx) px on the torus (down / right positive): exact sub-pixel for smooth images."""
    fy, fx = np.fft.fftfreq(img.shape[0])[:, None], np.fft.fftfreq(img.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (fy * dy + fx * dx))).real


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Static pond-bed-like texture: smooth blotches and fine grain around mid-grey."""
    return 80 + 10 * smooth_noise(rng, h, w, 2.0) + 3 * rng.normal(size=(h, w))


def square_clip(rng, t: int, h: int, w: int, v: tuple[int, int], size: int = 4) -> np.ndarray:
    """Grey [T, H, W]: a bright square moving v = (dy, dx) px per frame (np.roll: + is down / right),
    its path centred so that it stays inside the analysis window."""
    bg, sq = background(rng, h, w), np.zeros((h, w), bool)
    sq[:size, :size] = True
    y0, x0 = h // 2 - size // 2 - v[0] * (t - 1) // 2, w // 2 - size // 2 - v[1] * (t - 1) // 2
    frames = []
    for i in range(t):
        f = bg.copy()
        f[np.roll(sq, (y0 + v[0] * i, x0 + v[1] * i), axis=(0, 1))] = 230
        frames.append(f)
    return np.stack(frames)


def blob_clip(rng, t: int, h: int, w: int, v: tuple[float, float], sigma: float = 1.2) -> np.ndarray:
    """Grey [T, H, W]: a smooth textured blob moving a sub-pixel velocity v over a static background."""
    yy, xx = np.mgrid[:h, :w]
    envelope = np.exp(-((yy - h // 2) ** 2 + (xx - w // 2) ** 2) / (2 * sigma**2))
    blob = 150 * (1 + 0.3 * smooth_noise(rng, h, w, 1.0)) * envelope
    bg = background(rng, h, w)
    return np.stack([bg + fourier_shift(blob, v[0] * c, v[1] * c) for c in np.arange(t) - (t - 1) / 2])


def to_clips(*greys: np.ndarray) -> torch.Tensor:
    """Grey float frames -> a uint8 RGB batch [B, T, H, W, 3], as the benchmark stores clips."""
    u8 = np.clip(np.round(np.stack(greys)), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.repeat(u8[..., None], 3, axis=-1))


def displacements(clips: torch.Tensor) -> np.ndarray:
    """[B, T-1, 2] (dy, dx) per pair, read off the tokens."""
    return motion_featurize(clips)[1][..., :2].numpy()


@pytest.mark.parametrize("shape", [(8, 32, 32), (8, 48, 40)])
@pytest.mark.parametrize("v", [(2, -1), (0, 2), (-2, 0), (-1, -2), (3, 1)])
def test_integer_velocity_recovered(shape, v):
    rng = np.random.default_rng([*shape, v[0] + 10, v[1] + 10])
    got = displacements(to_clips(*(square_clip(rng, *shape, v) for _ in range(3))))
    assert got.shape == (3, shape[0] - 1, 2)
    np.testing.assert_allclose(got, np.broadcast_to(v, got.shape), atol=TOLERANCE_PX)


@pytest.mark.parametrize("v", [(1.5, -2.25), (-1.75, 0.8), (2.3, 1.2), (0.6, 2.4)])
def test_subpixel_velocity_recovered(v):
    rng = np.random.default_rng(7)
    got = displacements(to_clips(*(blob_clip(rng, 8, 32, 32, v) for _ in range(4))))
    np.testing.assert_allclose(got, np.broadcast_to(v, got.shape), atol=TOLERANCE_PX)


def test_sign_convention():
    """Positive dx: the content moved right (np.roll along +columns); positive dy: it moved down."""
    rng = np.random.default_rng(1)
    right, down = displacements(to_clips(square_clip(rng, 8, 32, 32, (0, 2)), square_clip(rng, 8, 32, 32, (2, 0))))
    assert (right[:, 1] > 1.5).all() and (np.abs(right[:, 0]) < TOLERANCE_PX).all()
    assert (down[:, 0] > 1.5).all() and (np.abs(down[:, 1]) < TOLERANCE_PX).all()


def test_static_clip_has_no_motion():
    rng = np.random.default_rng(2)
    frame = background(rng, 32, 32)
    _, tokens = motion_featurize(to_clips(np.stack([frame] * 8)))
    assert (tokens[..., 3:8] == 0).all()  # no frame difference anywhere
    assert tokens[..., :2].abs().max() < 1e-6
    assert (tokens[..., 8:] == 0).all()  # nothing changes over time either


def test_time_reversal_negates_and_reverses_displacements():
    rng = np.random.default_rng(3)
    fwd = square_clip(rng, 8, 32, 32, (2, -1)), blob_clip(rng, 8, 32, 32, (-1.5, 2.25))
    p = pair_statistics(torch.from_numpy(np.stack(fwd)).float())
    p_rev = pair_statistics(torch.from_numpy(np.stack([c[::-1] for c in fwd]).copy()).float())
    np.testing.assert_allclose(p_rev[..., :2].numpy(), -p.flip(1)[..., :2].numpy(), atol=1e-3)
    # peak heights and energies do not depend on the direction of play
    np.testing.assert_allclose(p_rev[..., 2:].numpy(), p.flip(1)[..., 2:].numpy(), atol=1e-3)


def test_quadrant_energies_are_rms_grey_levels_in_reading_order():
    grey = torch.full((1, 2, 32, 40), 100.0)
    grey[0, 1, 16:, :20] += 10.0  # only the bottom-left quadrant brightens, by 10 grey levels
    e = pair_statistics(grey)[0, 0, 3:].numpy()
    np.testing.assert_allclose(e, [0, 0, 10, 0, 5], atol=1e-5)  # whole frame: sqrt(10^2 / 4)


@pytest.mark.parametrize("t,h,w", [(8, 32, 32), (4, 48, 40), (2, 16, 8)])
def test_shapes_and_layout(t, h, w):
    clips = torch.from_numpy(np.random.default_rng(4).integers(0, 256, size=(3, t, h, w, 3), dtype=np.uint8))
    vectors, tokens = motion_featurize(clips)
    assert tokens.shape == (3, t - 1, TOKEN_DIM) and vectors.shape == (3, (t - 1) * TOKEN_DIM)
    assert torch.equal(vectors, tokens.flatten(1))  # time order kept
    p, c = tokens[..., :8], tokens[..., 8:]
    assert torch.equal(p, pair_statistics(clips.float().mean(-1)))
    assert (c[:, 0] == 0).all()
    torch.testing.assert_close(c[:, 1:], p[:, 1:] - p[:, :-1])


def test_too_few_frames_rejected():
    with pytest.raises(ValueError):
        pair_statistics(torch.zeros(2, 1, 16, 16))


def test_motion_model_featurizes_uint8_batch():
    model = motion_model()
    assert model.name == "motion" and model.per_frame is None
    assert model.identity == f"motion|v{MOTION_VERSION}|features-v{FEATURE_VERSION}"
    rng = np.random.default_rng(5)
    clips = to_clips(square_clip(rng, 8, 32, 32, (1, 2)), blob_clip(rng, 8, 32, 32, (0.5, -1.5)))
    assert clips.dtype == torch.uint8
    vectors, tokens = model.featurize(clips)
    assert vectors.dtype == tokens.dtype == torch.float32
    assert torch.isfinite(vectors).all() and vectors.shape == (2, 7 * TOKEN_DIM)


def test_deterministic_and_independent_of_batch():
    rng = np.random.default_rng(6)
    clips = to_clips(*(square_clip(rng, 8, 32, 32, (2, 1)) for _ in range(4)))
    a, b = motion_featurize(clips), motion_featurize(clips)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    alone = motion_featurize(clips[2:3])[0]
    torch.testing.assert_close(alone, a[0][2:3], atol=1e-4, rtol=1e-5)
