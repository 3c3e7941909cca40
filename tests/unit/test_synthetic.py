"""The synthetic physics world: determinism, the benchmark's balanced design, and physics that is what
the benchmark claims (gravity only in motion, ripples irreversible)."""
from __future__ import annotations

import collections
import json
from dataclasses import replace

import numpy as np
import pytest

from videossl.config import SyntheticConfig
from videossl.data import synthetic as S

SMALL = SyntheticConfig(seconds=1.0, fps=8, size=32, max_objects=3, gop=4, workers=1,
                        benchmark={"videos": 3, "seed": 7}, pool={"videos": 4, "seed": 8})
WORLD = SyntheticConfig()  # the default physics, as the benchmark uses it


def _worlds(cfg: SyntheticConfig, count: int, **design) -> list[S.World]:
    return [S.sample_world(S.video_seed(11, i), cfg, **design) for i in range(count)]


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
