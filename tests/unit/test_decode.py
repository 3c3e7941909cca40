"""Decoding arithmetic: resampling to the ingest frame rate, scaling and centre-cropping are exact."""
from __future__ import annotations

import numpy as np
import pytest

from videossl.data.decode import VideoMeta, center_crop, resample_indices, scaled_size

def test_resample_25_to_12_fps():
    meta = VideoMeta(fps=25.0, frames=250, width=640, height=272)  # 10 s
    idx = resample_indices(meta, 12)
    assert len(idx) == 120
    assert idx[:8].tolist() == [0, 2, 4, 6, 8, 10, 12, 15]
    assert set(np.diff(idx).tolist()) <= {2, 3} and idx[-1] <= 249
    # each tick of the 12 fps clock takes the nearest source frame
    assert np.all(np.abs(idx - np.arange(120) / 12 * 25) <= 0.5)


def test_resample_30_to_12_fps():
    meta = VideoMeta(fps=30.0, frames=90, width=64, height=64)  # 3 s
    idx = resample_indices(meta, 12)
    assert len(idx) == 36
    assert set(np.diff(idx).tolist()) == {2, 3}  # 2.5 source frames per tick, alternating
    assert idx[-1] - idx[0] == pytest.approx(35 * 2.5, abs=0.5)
    assert np.all(np.abs(idx - np.arange(36) * 2.5) <= 0.5)


def test_resample_edge_cases():
    assert resample_indices(VideoMeta(12.0, 24, 8, 8), 12).tolist() == list(range(24))  # same rate: identity
    up = resample_indices(VideoMeta(6.0, 6, 8, 8), 12)  # upsampling repeats frames
    assert up.tolist() == [0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 5, 5][: len(up)] and len(up) == 12
    assert len(resample_indices(VideoMeta(24.0, 1, 8, 8), 12)) == 0  # one frame at 24 fps: under one tick


def test_scaled_size_keeps_aspect_and_even_sides():
    assert scaled_size(640, 272, 32) == (76, 32)
    assert scaled_size(272, 640, 32) == (32, 76)  # portrait
    assert scaled_size(640, 272, 64) == (150, 64)
    assert scaled_size(1280, 720, 64) == (114, 64)
    assert scaled_size(64, 64, 32) == (32, 32)
    for w, h in [(640, 272), (176, 144), (1280, 720), (272, 640)]:
        sw, sh = scaled_size(w, h, 48)
        assert min(sw, sh) == 48 and sw % 2 == 0 and sh % 2 == 0
        assert sw / sh == pytest.approx(w / h, rel=0.05)


def test_center_crop_takes_the_middle():
    frames = np.zeros((2, 32, 38, 3), np.uint8)
    frames[..., 0] = np.arange(38)[None, None, :]  # red channel = column index
    frames[..., 1] = np.arange(32)[None, :, None]  # green channel = row index
    out = center_crop(frames, 32)
    assert out.shape == (2, 32, 32, 3) and out.flags["C_CONTIGUOUS"]
    assert out[0, 0, :, 0].tolist() == list(range(3, 35))
    assert out[0, :, 0, 1].tolist() == list(range(32))


# ---- timing: variable frame rates and frames a container lists but does not code -----------------

