"""The codec control on real H.264: a still scene played backwards must score at chance.

Still scenes (textures that never move) are encoded with libx264 under strict constant-bitrate
control, which starves every keyframe and lets the following P-frames refine the unchanged picture
("keyframe pumping"): a real quality pattern inside each group of pictures, and the only thing in
these videos that changes over time. They go through the real ingest step, then the real-video
arrow-of-time protocol (leave one video out, pooled Wilson interval). Without the control a linear
probe on a codec-quality feature reads the direction from the codec; with it, the same probe is at
chance, forward and reversed alike.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videossl.config import IngestConfig, RealArrowConfig, parse_config
from videossl.data.decode import Limits, decode_video, make_decoder
from videossl.data.shards import ClipStore
from videossl.eval.codec_control import codec_control, quality_features
from videossl.eval.features import FeatureCache, FeatureModel
from videossl.eval.real_video import arrow_score, real_arrow_tasks, real_features


REAL = RealArrowConfig()  # params.yaml's probe_eval.real: the control's sigma and tau, the validation tail


def control(clip):
    return codec_control(clip, REAL.control_sigma, REAL.control_tau)


def codec_probe(store, folds):
    """The codec-only features of every clip of the folds, through the benchmark's extraction path."""
    def featurize(clips):
        q = quality_features(clips)
        return q, q[:, None, :]
    model = FeatureModel("codec", "codec-probe", featurize)
    return real_features(store, folds, [model], 64, FeatureCache(None, "stills"), REAL.control_sigma,
                         REAL.control_tau)["codec"]
from videossl.steps.ingest import ingest

STILL_VIDEOS = 10      # textures; leave-one-video-out gives 10 folds
SIZE = 64              # encoded at the size ingest stores, so no downscaling washes the codec pattern out
SOURCE_FPS = 24
STORED_FPS = 12
SECONDS = 4
GOP = 24               # a keyframe every second: 12 stored frames per GOP, so most 8-frame clips hold a keyframe
# Tight enough to starve keyframes. Measured on these stills: the probe reads the direction at 1.00
# without the control, 0.61 [0.54, 0.69] after the low-pass alone (so this test tells the whole
# control from half of it), 0.50 with it.
BITRATE_KBPS = 30
VBV_SECONDS = 0.25     # a short rate-control buffer: bits cannot be saved up for the next keyframe
CLIP_FRAMES = 8
CLIPS_PER_VIDEO = 8    # 10 videos x 8 windows x 2 directions = 160 test clips over the folds
MIN_TEST_CLIPS = 100   # fewer and a Wilson interval around 0.5 is too wide to mean "at chance"
L2_GRID = [1e-2, 1e-1, 1.0]
PROBE_ITERS = 50
SHORTCUT_FLOOR = 0.75  # without the control the codec must give the direction away at least this well
CHANCE = 0.5
PAN_PX_PER_FRAME = 1   # the moving control video: the same kind of texture panning sideways
MOVING_SHARE = 0.5     # ... of which at least half the pixels must survive the control as moving
SEED = 20240611        # textures differ from the ones the control's threshold was calibrated on


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A natural-image-like still: 1/f noise (detail at every scale, as in photographs) plus a few
    hard-edged discs, uint8 [size, size, 3]."""
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    amplitude = 1.0 / np.maximum(f, 1.0 / size)
    img = np.stack([np.real(np.fft.ifft2(amplitude * np.exp(2j * np.pi * rng.random((size, size)))))
                    for _ in range(3)], -1)
    img = (img - img.mean()) / img.std() * 0.18 + 0.5  # mid-grey, +-0.18: contrast without much clipping
    yy, xx = np.mgrid[:size, :size]
    for _ in range(6):
        cy, cx, r = rng.random(3) * [size, size, size / 5]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_cbr_h264(frames: np.ndarray, path: Path) -> None:
    """libx264 at a constant bitrate, a keyframe exactly every GOP frames, no B-frames (decode order =
    display order), one thread (the same bytes on every run)."""
    vbv_kbits = int(BITRATE_KBPS * VBV_SECONDS)
    params = (f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:threads=1:nal-hrd=cbr:"
              f"bitrate={BITRATE_KBPS}:vbv-maxrate={BITRATE_KBPS}:vbv-bufsize={vbv_kbits}")
    with av.open(str(path), mode="w", format="mp4") as c:
        stream = c.add_stream("libx264", rate=SOURCE_FPS, options={"x264-params": params})
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, SOURCE_FPS)
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))


@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> ClipStore:
    """Still H.264 videos ingested by the real ingest step (local-directory source, one group each)."""
    root = tmp_path_factory.mktemp("stills")
    videos = root / "videos"
    videos.mkdir()
    rng = np.random.default_rng(SEED)
    for i in range(STILL_VIDEOS):
        still = texture(rng, SIZE)
        write_cbr_h264(np.repeat(still[None], SOURCE_FPS * SECONDS, axis=0), videos / f"still_{i:02d}.mp4")
    params = (f"seed: 0\ningest:\n  fps: {STORED_FPS}\n  size: {SIZE}\n  clip_frames: {CLIP_FRAMES}\n"
              f"  clip_stride: 4\n  sources: {json.dumps([str(videos)])}\n")
    ingest(parse_config(params, []), root / "data")
    return ClipStore(root / "data")


@pytest.fixture(scope="module")
def pan(tmp_path_factory) -> np.ndarray:
    """A moving video made the same way (the texture panning sideways), decoded as ingest decodes."""
    path = tmp_path_factory.mktemp("pan") / "pan.mp4"
    wide = np.concatenate([texture(np.random.default_rng(SEED + 1), SIZE) for _ in range(2)], axis=1)
    frames = np.stack([np.roll(wide, -i * PAN_PX_PER_FRAME, axis=1)[:, :SIZE]
                       for i in range(SOURCE_FPS * SECONDS)])
    write_cbr_h264(frames, path)
    decoded, _ = decode_video(path, make_decoder("auto"), STORED_FPS, SIZE, Limits.of(IngestConfig()))
    return decoded


def test_the_stills_have_keyframes_where_the_test_expects(stills):
    path = Path(stills.dir).parent / "videos" / "still_00.mp4"
    with av.open(str(path)) as c:
        keyframes = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert keyframes == list(range(0, SOURCE_FPS * SECONDS, GOP))
    assert len(stills.videos) == STILL_VIDEOS and all(v.kind == "real" for v in stills.videos)


def test_without_the_control_the_codec_gives_the_direction_away(stills):
    folds = real_arrow_tasks(stills, CLIPS_PER_VIDEO, False, REAL.val_fraction)
    score = arrow_score(folds, codec_probe(stills, folds), L2_GRID, PROBE_ITERS)
    assert score.n >= MIN_TEST_CLIPS
    assert score.accuracy > SHORTCUT_FLOOR, score
    assert min(score.forward_accuracy, score.backward_accuracy) > SHORTCUT_FLOOR, score


def test_with_the_control_a_still_clip_scores_chance_in_both_directions(stills):
    folds = real_arrow_tasks(stills, CLIPS_PER_VIDEO, True, REAL.val_fraction)
    score = arrow_score(folds, codec_probe(stills, folds), L2_GRID, PROBE_ITERS)
    assert score.n >= MIN_TEST_CLIPS
    assert score.ci_low <= CHANCE <= score.ci_high, score
    assert score.forward_ci[0] <= CHANCE <= score.forward_ci[1], score
    assert score.backward_ci[0] <= CHANCE <= score.backward_ci[1], score


def test_the_control_treats_both_directions_identically(stills):
    # "re-encode both directions identically": the control of a reversed clip is the reversed
    # control of the clip, bit for bit, so it cannot add a direction of its own
    for video in stills.videos[:3]:
        for start in (0, 5, video.frames - CLIP_FRAMES):
            clip = stills.window(video, start, CLIP_FRAMES)
            assert np.array_equal(control(clip[::-1]), control(clip)[::-1])


def test_the_control_freezes_still_scenes_and_keeps_motion(stills, pan):
    # the mechanism behind chance: every still window becomes one repeated frame, identical to its
    # reverse for any featurizer, although the decoded window flickers (the codec pattern)
    for video in stills.videos:
        for start in video.clip_starts:
            clip = stills.window(video, start, CLIP_FRAMES)
            assert len({f.tobytes() for f in clip}) > 1, (video.source_id, start)
            assert len({f.tobytes() for f in control(clip)}) == 1, (video.source_id, start)
    moving = control(pan[:CLIP_FRAMES])
    changed = (moving != moving[:1]).any(axis=(0, 3))  # [H, W]: pixels that differ from the first frame
    assert changed.mean() > MOVING_SHARE
