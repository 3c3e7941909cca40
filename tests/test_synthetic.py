"""The synthetic physics world: determinism, the benchmark's balanced design, real decodable H.264
files, and physics that is what the benchmark claims (gravity only in motion, ripples irreversible)."""
from __future__ import annotations

import collections
import json
from dataclasses import replace
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from videossl.config import SyntheticConfig
from videossl.data import synthetic as S
from videossl.data.encode import rgb_to_yuv420p, write_video

SMALL = SyntheticConfig(seconds=1.0, fps=8, size=32, max_objects=3, gop=4, workers=1,
                        benchmark={"videos": 3, "seed": 7}, pool={"videos": 4, "seed": 8})
WORLD = SyntheticConfig()  # the default physics, as the benchmark uses it


def _worlds(cfg: SyntheticConfig, count: int, **design) -> list[S.World]:
    return [S.sample_world(S.video_seed(11, i), cfg, **design) for i in range(count)]


def _decode_pyav(path: Path) -> tuple[np.ndarray, av.video.stream.VideoStream, list[bool]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [p.is_keyframe for p in container.demux(stream) if p.size > 0]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return frames, stream, keyframes


# ----------------------------------------------------------------------------------------------
# determinism, labels and the benchmark's design


def test_same_seed_same_video_and_other_seed_differs():
    frames_a, labels_a = S.render_video(123, SMALL)
    frames_b, labels_b = S.render_video(123, SMALL)
    frames_c, labels_c = S.render_video(124, SMALL)
    assert np.array_equal(frames_a, frames_b) and labels_a == labels_b
    assert not np.array_equal(frames_a, frames_c) and labels_a != labels_c


def test_render_shape_dtype_and_labels():
    cfg = SyntheticConfig(seconds=1.5, fps=10, size=48, max_objects=4)
    for seed in range(12):
        frames, labels = S.render_video(seed, cfg)
        assert frames.shape == (15, 48, 48, 3) and frames.dtype == np.uint8
        assert json.loads(json.dumps(labels)) == labels  # JSON-serialisable as is
        assert type(labels["gravity"]) is int and labels["gravity_name"] == S.GRAVITY_NAMES[labels["gravity"]]
        assert 1 <= labels["n_objects"] <= 4 and labels["shapes"] == [labels["shape"]] * labels["n_objects"]
        assert labels["processes"] == ["drag", "ripples"]
        assert len(labels["irreversibility"]) == 15 and min(labels["irreversibility"]) >= 0
        assert labels["seed"] == seed and labels["version"] == S.GENERATOR_VERSION


def test_benchmark_design_is_balanced_in_every_split():
    cfg = WORLD.model_copy(update={"benchmark": WORLD.benchmark.model_copy(update={"videos": 432})})
    plan = S.benchmark_plan(cfg)
    assert [p.index for p in plan] == list(range(432))
    assert len({p.seed for p in plan}) == 432
    splits = collections.Counter(p.split for p in plan)
    assert splits == {"train": 180, "val": 72, "test": 180}
    for split in ("train", "val", "test"):
        mine = [p for p in plan if p.split == split]
        # every label of every factor is equally frequent in every split: no label-prior shift
        for factor, values in (("gravity", 4), ("n_objects", 3), ("shape", 3)):
            counts = collections.Counter(getattr(p, factor) for p in mine)
            assert len(counts) == values and len(set(counts.values())) == 1, (split, factor, counts)
    assert S.benchmark_plan(cfg) == plan  # deterministic


def test_pool_holds_out_its_val_fraction_and_has_its_own_seeds():
    plan = S.pool_plan(WORLD)
    assert len(plan) == WORLD.pool.videos
    held = sum(p.split == "val" for p in plan)
    assert held == pytest.approx(WORLD.pool.val_fraction * WORLD.pool.videos, abs=1)
    assert {p.split for p in plan} == {"train", "val"}
    bench = {p.seed for p in S.benchmark_plan(WORLD)}
    assert not bench & {p.seed for p in plan}  # the two worlds share no video


def test_design_choices_are_honoured():
    for g in range(4):
        for n in (1, 3):
            w = S.sample_world(5, WORLD, gravity=g, n_objects=n, shape=2)
            assert (w.gravity, w.n_objects, w.shape) == (g, n, "triangle")
            assert len(np.unique(w.colours, axis=0)) == n  # distinct colours within a video


# ----------------------------------------------------------------------------------------------
# encoded files


def test_generate_writes_decodable_lossless_mp4_and_json(tmp_path):
    paths = S.generate(SMALL, "benchmark", tmp_path)
    assert paths == [tmp_path / f"{i:05d}.mp4" for i in range(3)]
    plan = S.benchmark_plan(SMALL)
    for p, path in zip(plan, paths):
        labels = json.loads(path.with_suffix(".json").read_text())
        rendered, expected = S.render_video(p.seed, SMALL, gravity=p.gravity, n_objects=p.n_objects, shape=p.shape)
        assert labels == {**expected, "split": p.split}
        vr = decord.VideoReader(str(path))
        decoded = vr.get_batch(list(range(len(vr)))).asnumpy()
        assert decoded.shape == rendered.shape and vr.get_avg_fps() == pytest.approx(SMALL.fps)
        # crf 0 is lossless: the decoded YUV planes are exactly what was encoded, so there is no
        # quality pattern inside a GOP for a reversed clip to show; what the RGB frames still differ
        # by is the colour conversion, the same for every frame
        with av.open(str(path)) as container:
            yuv = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
        assert all(np.array_equal(y, rgb_to_yuv420p(f)) for y, f in zip(yuv, rendered))
        assert np.abs(decoded.astype(np.float32) - rendered).mean() < 3.0
        frames, stream, _ = _decode_pyav(path)
        assert frames.shape == rendered.shape and stream.codec_context.pix_fmt == "yuv420p"
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave nothing behind


def test_parallel_generation_writes_the_same_bytes(tmp_path):
    serial = S.generate(SMALL, "pool", tmp_path / "serial")
    parallel = S.generate(SMALL.model_copy(update={"workers": 2}), "pool", tmp_path / "parallel")
    assert [p.read_bytes() for p in serial] == [p.read_bytes() for p in parallel]
    assert [p.with_suffix(".json").read_text() for p in serial] == [p.with_suffix(".json").read_text() for p in parallel]


def test_generate_skips_up_to_date_videos_and_redoes_changed_ones(tmp_path):
    paths = S.generate(SMALL, "pool", tmp_path)
    stamps = [p.stat().st_mtime_ns for p in paths]
    seen = []
    assert S.generate(SMALL, "pool", tmp_path, progress=seen.append) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps and sum(seen) == len(paths)
    sidecar = paths[0].with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "gravity": 99}))
    paths[1].unlink()
    S.generate(SMALL, "pool", tmp_path)
    assert json.loads(sidecar.read_text())["gravity"] != 99
    assert paths[0].stat().st_mtime_ns != stamps[0] and paths[1].is_file()
    assert paths[2].stat().st_mtime_ns == stamps[2]
    # another frame size changes every video, though the physics labels are the same
    S.generate(SMALL.model_copy(update={"size": 64}), "pool", tmp_path)
    assert decord.VideoReader(str(paths[2]))[0].shape == (64, 64, 3)


@pytest.mark.parametrize("gop", [1, 5, 8])
def test_keyframes_every_gop_frames(tmp_path, gop):
    frames, _ = S.render_video(3, SyntheticConfig(seconds=2.0, fps=12, size=32))
    path = tmp_path / "v.mp4"
    write_video(frames, path, fps=12, gop=gop, crf=18)
    decoded, _, keyframes = _decode_pyav(path)
    assert len(keyframes) == len(decoded) == len(frames)
    assert [i for i, k in enumerate(keyframes) if k] == list(range(0, len(frames), gop))


def test_write_video_is_bit_exact_and_atomic(tmp_path):
    frames, _ = S.render_video(11, SMALL)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_video(frames, a, fps=SMALL.fps, gop=SMALL.gop, crf=0)
    write_video(frames, b, fps=SMALL.fps, gop=SMALL.gop, crf=0)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


def test_write_video_rejects_odd_frame_size(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(np.zeros((4, 33, 33, 3), np.uint8), tmp_path / "odd.mp4", fps=12, gop=4, crf=0)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# physics


def test_objects_sink_along_gravity_and_kicks_scatter_them_every_way():
    for g in range(4):
        vel = np.concatenate([S.simulate_world(w, WORLD).vel.reshape(-1, 2) for w in _worlds(WORLD, 40, gravity=g)])
        down = S.GRAVITY_DIRECTIONS[g]
        across = np.array([-down[1], down[0]])
        # kicks point every way and relax back to sinking: on average only (most of) the sinking is left ...
        assert abs(vel.mean(0) @ across) < 0.03
        assert 0.6 * S.TERMINAL_SPEED < vel.mean(0) @ down <= S.TERMINAL_SPEED
        # ... but a kicked object moves against or across it for a while: the motion is never a constant drift
        assert (vel @ down < 0.5 * S.TERMINAL_SPEED).mean() > 0.05
        assert np.abs(vel @ across).max() > 0.5 * S.KICK_SPEED


def test_drag_relaxes_a_kick_exponentially_between_kicks():
    world = _worlds(WORLD, 1, gravity=0)[0]
    traj = S.simulate_world(world, WORLD)
    transient = traj.vel - world.terminal_velocity  # [F, N, 2]
    ratio = np.linalg.norm(transient[1:], axis=-1) / np.maximum(np.linalg.norm(transient[:-1], axis=-1), 1e-12)
    decay = np.exp(-S.DRAG_RATE / WORLD.fps)
    smooth = np.isclose(ratio, decay, rtol=1e-6)  # frames without a kick in between
    assert smooth.mean() > 0.4 and (~smooth).any()  # mostly relaxing, with kicks in between
    kicked = np.concatenate([S.kick_velocities(np.random.default_rng(s), 100) for s in range(4)])
    speed = np.linalg.norm(kicked, axis=1)
    assert speed.min() >= S.KICK_SPEED * (1 - S.KICK_SPEED_JITTER) - 1e-9
    assert speed.max() <= S.KICK_SPEED * (1 + S.KICK_SPEED_JITTER) + 1e-9
    quadrant = np.arctan2(kicked[:, 1], kicked[:, 0]) // (np.pi / 2)  # every direction, evenly
    np.testing.assert_allclose(np.bincount((quadrant + 2).astype(int), minlength=4) / len(kicked), 0.25, atol=0.07)


def test_positions_are_uniform_whatever_the_gravity():
    """No floor and no pile: where things are says nothing about which way they sink."""
    for g in range(4):
        pos = np.concatenate([S.simulate_world(w, WORLD).pos.reshape(-1, 2) for w in _worlds(WORLD, 400, gravity=g)])
        assert pos.min() >= 0 and pos.max() < 1
        for axis in (0, 1):  # each quarter of the box holds a quarter of the positions
            counts = np.histogram(pos[:, axis], bins=4, range=(0, 1))[0] / len(pos)
            np.testing.assert_allclose(counts, 0.25, atol=0.05)


def test_ripples_expand_rise_and_fade():
    world = _worlds(WORLD, 1)[0]
    times = np.arange(0, 3, 0.05)
    radius, amplitude = S.ripple_state(world, times)
    age = times[:, None] - world.ripple_births[None]
    born = age > 0
    moving = born[:-1] & born[1:]
    assert np.all(np.diff(radius, axis=0)[moving] > 0)  # every front only moves outwards
    np.testing.assert_allclose(radius[born], S.RIPPLE_START_RADIUS + S.RIPPLE_SPEED * age[born])
    assert np.all(amplitude[~born] == 0) and amplitude.max() <= S.RIPPLE_AMPLITUDE
    peak = np.log(S.RIPPLE_DECAY / S.RIPPLE_RISE + 1) * S.RIPPLE_RISE  # d amplitude / d age = 0
    old = born & (age > peak)
    later = np.diff(amplitude, axis=0)[old[:-1] & old[1:]]
    assert np.all(later < 0)  # past its peak a ring only fades


def test_ripples_carry_no_brightness_and_their_record_counts_their_travel():
    world = replace(_worlds(WORLD, 1)[0], radii=np.zeros(0), angles=np.zeros(0), colours=np.zeros((0, 3)),
                    pos0=np.zeros((0, 2)), vel0=np.zeros((0, 2)))
    traj = S.simulate_world(world, WORLD)
    still = replace(world, ripple_births=np.zeros(0), ripple_centres=np.zeros((0, 2)))
    wave = S.render(world, traj, 64).astype(np.float32) - S.render(still, S.simulate_world(still, WORLD), 64)
    assert np.abs(wave).max() > 10  # rings are visible ...
    assert np.abs(wave.mean((1, 2, 3))).max() < 0.15 * np.abs(wave).mean()  # ... but add no brightness
    np.testing.assert_allclose(traj.irreversibility,
                               traj.ripple_amplitude.sum(1) * S.RIPPLE_SPEED / WORLD.fps * WORLD.size)
    assert traj.irreversibility.min() > 0  # a ring is in view at every moment


def test_objects_wrap_around_the_edges():
    world = replace(_worlds(WORLD, 1, n_objects=1, shape=1)[0], ripple_births=np.zeros(0),
                    ripple_centres=np.zeros((0, 2)), pos0=np.array([[0.995, 0.5]]), vel0=np.zeros((1, 2)))
    traj = S.simulate_world(world, WORLD)
    traj = replace(traj, pos=np.broadcast_to(world.pos0, traj.pos.shape).copy())  # held at the seam
    empty = replace(world, radii=np.zeros(0), angles=np.zeros(0), colours=np.zeros((0, 3)))
    drawn = np.abs(S.render(world, traj, 32)[0].astype(np.float32) - S.render(empty, traj, 32)[0]).max(-1)
    assert drawn[:, :2].max() > 30 and drawn[:, -2:].max() > 30  # on both sides of the seam
    assert drawn[:, 8:24].max() == 0  # and nowhere in the middle
