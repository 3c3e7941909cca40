"""The synthetic physics world: determinism, real decodable H.264 files, and physics that is real."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from videossl.config import SyntheticConfig
from videossl.data import synthetic as S

SMALL = SyntheticConfig(videos=3, seconds=1.0, fps=12, size=32, max_objects=3, gop=4, seed=7)
PHYSICS = SyntheticConfig(videos=1, seconds=4.0, fps=24, size=32, max_objects=3, gop=8, seed=0)


def _worlds(cfg: SyntheticConfig, count: int) -> list[S.World]:
    return [S.sample_world(S.video_seed(cfg.seed, i), cfg) for i in range(count)]


def _drop_world(gravity: int, restitution: float = 0.8) -> S.World:
    """One circle released near the ceiling (the wall opposite the floor) with a small sideways push."""
    base = S.sample_world(0, PHYSICS)
    down = S.GRAVITY_DIRECTIONS[gravity]
    sideways = np.array([down[1], down[0]])
    return replace(
        base, gravity=gravity, shapes=("circle",), radii=np.array([0.08]), angles=np.zeros(1),
        colours=S.PALETTE[:1], pos0=(0.5 - 0.38 * down)[None], vel0=(0.3 * sideways)[None],
        restitution=restitution, friction=0.1, scatter=False,
    )


def _decode_pyav(path: Path) -> tuple[np.ndarray, av.video.stream.VideoStream, list[bool]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [p.is_keyframe for p in container.demux(stream) if p.size > 0]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return frames, stream, keyframes


# ----------------------------------------------------------------------------------------------
# determinism and labels


def test_same_seed_same_video_and_other_seed_differs():
    frames_a, labels_a = S.render_video(123, SMALL)
    frames_b, labels_b = S.render_video(123, SMALL)
    frames_c, labels_c = S.render_video(124, SMALL)
    assert np.array_equal(frames_a, frames_b)
    assert labels_a == labels_b
    assert not np.array_equal(frames_a, frames_c)
    assert labels_a != labels_c


def test_render_shape_dtype_and_labels_in_range():
    cfg = SyntheticConfig(seconds=1.5, fps=10, size=48, max_objects=4)
    for seed in range(12):
        frames, labels = S.render_video(seed, cfg)
        assert frames.shape == (15, 48, 48, 3) and frames.dtype == np.uint8
        assert frames.std() > 0  # not a flat image
        assert json.loads(json.dumps(labels)) == labels  # JSON-serialisable as is
        assert type(labels["gravity"]) is int and 0 <= labels["gravity"] < 4
        assert labels["gravity_name"] == S.GRAVITY_NAMES[labels["gravity"]]
        assert type(labels["n_objects"]) is int and 1 <= labels["n_objects"] <= 4
        assert len(labels["shapes"]) == labels["n_objects"] and set(labels["shapes"]) <= set(S.SHAPES)
        assert S.RESTITUTION_RANGE[0] <= labels["restitution"] <= S.RESTITUTION_RANGE[1] < 1
        assert S.FRICTION_RANGE[0] <= labels["friction"] <= S.FRICTION_RANGE[1]
        assert S.SPEED_RANGE[0] <= labels["speed"] <= S.SPEED_RANGE[1]
        assert {"bounce", "slide"} <= set(labels["processes"]) <= {"bounce", "slide", "dye", "scatter"}
        assert type(labels["seed"]) is int and labels["seed"] == seed


def test_all_gravities_and_processes_occur():
    worlds = _worlds(PHYSICS, 64)
    assert {w.gravity for w in worlds} == set(range(4))
    dye = sum(w.dye for w in worlds)
    assert 16 <= dye <= 48  # about half the videos
    assert any(w.scatter for w in worlds)
    # distinct colours within a video, the dye included
    for w in worlds:
        colours = np.vstack([w.colours, w.dye_colour[None]])
        assert len(np.unique(colours, axis=0)) == len(colours)


def test_video_seed_is_deterministic_and_distinct():
    seeds = [S.video_seed(5, i) for i in range(100)]
    assert seeds == [S.video_seed(5, i) for i in range(100)]
    assert len(set(seeds)) == 100
    assert S.video_seed(6, 0) != S.video_seed(5, 0)
    assert S.video_seed(-1, 0) >= 0  # negative base seeds work too


# ----------------------------------------------------------------------------------------------
# encoded files


def test_generate_writes_decodable_mp4_and_json(tmp_path):
    paths = S.generate(SMALL, tmp_path)
    assert paths == [tmp_path / f"synth_{i:04d}.mp4" for i in range(SMALL.videos)]
    n_frames = round(SMALL.seconds * SMALL.fps)
    for i, path in enumerate(paths):
        labels = json.loads(path.with_suffix(".json").read_text())
        rendered, expected_labels = S.render_video(S.video_seed(SMALL.seed, i), SMALL)
        assert labels == expected_labels

        vr = decord.VideoReader(str(path))
        decoded = vr.get_batch(list(range(len(vr)))).asnumpy()
        assert len(vr) == n_frames
        assert decoded.shape == (n_frames, SMALL.size, SMALL.size, 3)
        assert vr.get_avg_fps() == pytest.approx(SMALL.fps)
        # lossy, but the content is the rendered video
        assert np.abs(decoded.astype(np.float32) - rendered).mean() < 6.0

        frames, stream, _ = _decode_pyav(path)
        assert frames.shape == (n_frames, SMALL.size, SMALL.size, 3)
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == pytest.approx(SMALL.fps)
        assert np.abs(frames.astype(np.float32) - rendered).mean() < 6.0
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave nothing behind


def test_generate_skips_up_to_date_videos_and_redoes_changed_ones(tmp_path):
    paths = S.generate(SMALL, tmp_path)
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert S.generate(SMALL, tmp_path) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps

    # a sidecar that no longer matches, or a missing mp4, is regenerated; the others are kept
    sidecar = paths[0].with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "gravity": 99}))
    paths[1].unlink()
    S.generate(SMALL, tmp_path)
    assert json.loads(sidecar.read_text())["gravity"] != 99
    assert paths[0].stat().st_mtime_ns != stamps[0]
    assert paths[1].is_file()
    assert paths[2].stat().st_mtime_ns == stamps[2]

    # another frame size changes every video, though the physics labels are the same
    bigger = SMALL.model_copy(update={"size": 64})
    S.generate(bigger, tmp_path)
    assert decord.VideoReader(str(paths[2]))[0].shape == (64, 64, 3)


@pytest.mark.parametrize("gop", [1, 5, 8])
def test_keyframes_every_gop_frames(tmp_path, gop):
    frames, _ = S.render_video(3, SyntheticConfig(seconds=2.0, fps=12, size=32))
    path = tmp_path / "v.mp4"
    S.write_video(frames, path, fps=12, gop=gop)
    decoded, _, keyframes = _decode_pyav(path)
    assert len(keyframes) == len(decoded) == len(frames)
    assert [i for i, k in enumerate(keyframes) if k] == list(range(0, len(frames), gop))


def test_write_video_is_bit_exact_and_atomic(tmp_path):
    frames, _ = S.render_video(11, SMALL)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    S.write_video(frames, a, fps=SMALL.fps, gop=SMALL.gop)
    S.write_video(frames, b, fps=SMALL.fps, gop=SMALL.gop)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


def test_write_video_rejects_odd_frame_size(tmp_path):
    with pytest.raises(ValueError, match="even"):
        S.write_video(np.zeros((4, 33, 33, 3), np.uint8), tmp_path / "odd.mp4", fps=12, gop=4)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# physics


def test_free_flight_acceleration_points_along_gravity():
    by_gravity: dict[int, list[np.ndarray]] = {g: [] for g in range(4)}
    for world in _worlds(PHYSICS, 24):
        traj = S.simulate_world(world, PHYSICS)
        # acceleration from positions only (what a viewer sees), on frames with no wall contact
        acc = (traj.pos[2:] - 2 * traj.pos[1:-1] + traj.pos[:-2]) * PHYSICS.fps**2
        free = ~(traj.contact[:-2] | traj.contact[1:-1])
        assert traj.contact.any()  # walls are hit, so the mask is not trivially all-free
        by_gravity[world.gravity].append(acc[free])
    for g, accs in by_gravity.items():
        acc = np.concatenate(accs)
        assert len(acc) > 50, S.GRAVITY_NAMES[g]
        np.testing.assert_allclose(acc.mean(axis=0), S.GRAVITY_ACCEL * S.GRAVITY_DIRECTIONS[g], atol=1e-6)
        # and every single free-flight frame, not just the mean
        np.testing.assert_allclose(acc, np.broadcast_to(S.GRAVITY_ACCEL * S.GRAVITY_DIRECTIONS[g], acc.shape), atol=1e-6)


@pytest.mark.parametrize("gravity", range(4))
def test_bounce_apex_heights_decrease(gravity):
    world = _drop_world(gravity)
    traj = S.simulate_world(world, PHYSICS)
    h = traj.height[:, 0]
    apex = [f for f in range(1, len(h) - 1) if h[f] > h[f - 1] and h[f] >= h[f + 1] and h[f] > 0.01]
    assert len(apex) >= 3
    assert np.all(np.diff(h[apex]) < 0), h[apex]
    # each bounce keeps about restitution^2 of the height (frame sampling blurs the apex a little)
    ratios = h[apex][1:] / h[apex][:-1]
    np.testing.assert_allclose(ratios, world.restitution**2, atol=0.05)
    # it starts high up and slides away
    assert h[0] > 0.7
    tangent = 1 - int(np.argmax(np.abs(S.GRAVITY_DIRECTIONS[gravity])))
    assert abs(traj.pos[-1, 0, tangent] - traj.pos[0, 0, tangent]) > 0.1


def test_mechanical_energy_only_decreases():
    for world in [_drop_world(0, 0.6), *_worlds(PHYSICS, 8)]:
        traj = S.simulate_world(world, PHYSICS)
        energy = S.GRAVITY_ACCEL * traj.height + 0.5 * (traj.vel**2).sum(-1)  # [F, N]
        # semi-implicit Euler conserves it in free flight up to O(g |v| dt)
        assert np.all(np.diff(energy, axis=0) < 2e-2)
        assert np.all(energy[-1] < 0.8 * energy[0])


def test_sliding_objects_slow_down_by_friction():
    # a circle of radius 0.08 put on the floor (gravity down), pushed to the right
    world = replace(_drop_world(0, 0.5), pos0=np.array([[0.2, 0.92]]), vel0=np.array([[1.0, 0.0]]), friction=0.2)
    traj = S.simulate_world(world, PHYSICS)
    vx = traj.vel[:, 0, 0]
    resting = traj.height[:, 0] < 1e-3
    assert resting.all()  # it is put on the floor and stays there
    moving = np.abs(vx) > 0
    # decelerates by friction * g while sliding (the walls it reaches only reverse it)
    speed = np.abs(vx[moving])
    decel = -np.diff(speed) * PHYSICS.fps
    assert np.median(decel) == pytest.approx(world.friction * S.GRAVITY_ACCEL, rel=0.05)
    assert vx[-1] == 0.0  # and comes to a stop


def test_objects_move_for_most_of_the_video():
    moving = []
    for world in _worlds(PHYSICS, 32):
        traj = S.simulate_world(world, PHYSICS)
        speed = np.linalg.norm(traj.vel, axis=-1)
        moving.append((speed > 0.05).mean())
    assert np.mean(moving) > 0.75


def test_dye_radius_grows_and_intensity_fades():
    worlds = [w for w in _worlds(PHYSICS, 16) if w.dye]
    assert worlds
    for world in worlds:
        traj = S.simulate_world(world, PHYSICS)
        assert np.all(np.diff(traj.dye_radius) >= 0) and traj.dye_radius[-1] > 1.2 * traj.dye_radius[0]
        assert np.all(np.diff(traj.dye_intensity) <= 0) and traj.dye_intensity[-1] < 0.8 * traj.dye_intensity[0]
        # mass conservation: peak * radius^2 stays constant
        np.testing.assert_allclose(traj.dye_intensity * traj.dye_radius**2, world.dye_intensity0 * world.dye_sigma0**2)
    no_dye = next(w for w in _worlds(PHYSICS, 16) if not w.dye)
    assert not S.simulate_world(no_dye, PHYSICS).dye_radius.any()


def test_dye_in_the_pixels_spreads_and_fades():
    world = next(w for w in _worlds(PHYSICS, 16) if w.dye)
    empty = replace(world, shapes=(), radii=np.zeros(0), angles=np.zeros(0), colours=np.zeros((0, 3)),
                    pos0=np.zeros((0, 2)), vel0=np.zeros((0, 2)))
    size = 64
    traj = S.simulate_world(empty, PHYSICS)
    with_dye = S.render(empty, traj, size).astype(np.float32)
    without = S.render(replace(empty, dye=False), traj, size).astype(np.float32)
    blob = np.abs(with_dye - without).sum(-1)  # [F, S, S]: the dye alone
    peak = blob.reshape(len(blob), -1).max(1)
    assert np.all(np.diff(peak) <= 3)  # only fades (3 = rounding of three channels)
    assert peak[-1] < 0.8 * peak[0]
    # spread: intensity-weighted mean squared distance from the blob centre grows
    coords = (np.arange(size) + 0.5) / size
    r2 = (coords[None, :] - world.dye_centre[0]) ** 2 + (coords[:, None] - world.dye_centre[1]) ** 2
    spread = (blob * r2).sum((1, 2)) / blob.sum((1, 2))
    assert spread[-1] > spread[len(spread) // 2] > spread[0]


def test_floor_is_not_drawn():
    # a frame with every object far from the walls has no line along any edge: the four border
    # strips look like the interior background
    world = replace(_drop_world(0), pos0=np.array([[0.5, 0.5]]), vel0=np.zeros((1, 2)))
    frame = S.render(world, S.simulate_world(world, PHYSICS), 32)[0].astype(np.float32)
    interior = frame[8:-8, 8:-8].reshape(-1, 3)
    interior = interior[np.abs(interior - world.background).max(1) <= S.TEXTURE_AMPLITUDE + 1]
    for strip in (frame[0], frame[-1], frame[:, 0], frame[:, -1]):
        assert np.abs(strip.mean(0) - interior.mean(0)).max() < 2.0
