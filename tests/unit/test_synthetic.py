"""The synthetic world: determinism, the benchmark's balanced design, a pool of natural videos only, and
physics that is what the benchmark claims (gravity only in acceleration, reversible bounces and
collisions, matched sets whose frames are shared)."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from videossl.config import ConfigError, SyntheticConfig, parse_config
from videossl.data import synthetic as S
from videossl.data.synthetic import families as F
from videossl.data.synthetic import physics as P
from videossl.data.synthetic import render as R

SMALL = SyntheticConfig(seconds=1.0, fps=8, size=32, max_objects=3, gop=4, workers=1,
                        benchmark={"families": {"bounce": 3, "permanence": 2}, "seed": 7},
                        pool={"families": {"bounce": 2, "glide": 2}, "seed": 8})
WORLD = SyntheticConfig()  # the default physics, as the benchmark uses it
SEGMENT = 8


def _made(family: str, index: int, cfg: SyntheticConfig = WORLD) -> F.Made:
    return S.make_unit(S.Unit(family, index, S.unit_seed(11, family, index), (), "test"), cfg, SEGMENT)


# ----------------------------------------------------------------------------------------------
# determinism, labels and the worlds' plans


def test_same_seed_same_video_and_other_seed_differs():
    a, b, other = _made("bounce", 0, SMALL), _made("bounce", 0, SMALL), _made("bounce", 1, SMALL)
    assert np.array_equal(a.frames, b.frames) and a.labels == b.labels
    assert not np.array_equal(a.frames, other.frames)


def test_every_family_renders_uint8_frames_with_its_labels():
    for family in S.FAMILIES:
        made = _made(family, 0)
        assert made.frames.dtype == np.uint8 and made.frames.shape[1:] == (WORLD.size, WORLD.size, 3)
        assert made.labels["family"] == family and made.labels["frames"] == len(made.frames)
        if "segments" in made.labels:  # a set: one clip per member, one after another
            starts = [s["start"] for s in made.labels["segments"]]
            assert starts == list(range(0, len(made.frames), SEGMENT))
            assert {s["possible"] for s in made.labels["segments"]} == {0, 1}


def test_benchmark_design_is_balanced_in_every_split():
    cfg = WORLD.model_copy(update={"benchmark": WORLD.benchmark.model_copy(update={"families": {"bounce": 360}})})
    units = S.plan(cfg, "benchmark")
    cells = collections.Counter((u.design, u.split) for u in units)
    per_split = {s: {cells[(c, s)] for c in F.FAMILIES["bounce"].cells(cfg.max_objects)} for s in S.SPLIT_NAMES}
    assert per_split == {"train": {4}, "val": {2}, "test": {4}}  # 10 per cell: 4 / 2 / 4


def test_the_pool_takes_natural_families_only():
    assert set(WORLD.pool.families) <= set(S.NATURAL)
    assert not {"permanence", "future", "causality", "dye"} & set(S.NATURAL)
    with pytest.raises(ConfigError, match="ingest.synthetic.pool.families.*natural families only"):
        parse_config("ingest: {synthetic: {pool: {families: {bounce: 10, permanence: 5}}}}")
    with pytest.raises(ConfigError, match="unknown scene families"):
        parse_config("ingest: {synthetic: {benchmark: {families: {bounse: 10}}}}")
    for unit in S.plan(SMALL, "pool"):
        labels = S.make_unit(unit, SMALL, SEGMENT).labels
        assert "segments" not in labels and labels["family"] in S.NATURAL


def test_pool_holds_out_its_val_fraction_and_has_its_own_seeds():
    cfg = WORLD.model_copy(update={"pool": WORLD.pool.model_copy(update={"families": {"bounce": 100}})})
    pool = S.plan(cfg, "pool")
    assert sum(u.split == "val" for u in pool) == 5 and {u.split for u in pool} == {"train", "val"}
    assert not {u.seed for u in pool} & {u.seed for u in S.plan(WORLD, "benchmark")}


# ----------------------------------------------------------------------------------------------
# physics


def test_bouncing_arcs_return_to_their_height_so_the_mean_displacement_is_zero():
    """Over whole arcs the displacement along gravity is zero: a drift detector has nothing to read."""
    g = P.GRAVITY_DIRECTIONS[0]
    period = 1.1
    times = np.linspace(0, 4 * period, 4001)
    path = P.arcs(times, np.zeros(2), g, period, 0.3, drift=0.0)
    along = path @ g
    assert abs(along[-1] - along[0]) < 1e-9
    assert along.max() <= 1e-12 and along.min() == pytest.approx(-P.GRAVITY * period ** 2 / 8, rel=1e-3)


def test_time_reversal_keeps_the_acceleration_so_it_keeps_the_gravity_label():
    """Played backwards a falling arc is still an arc under the same gravity: second differences keep
    their sign (away from the bounces)."""
    g = P.GRAVITY_DIRECTIONS[3]
    times = np.arange(0, 0.6, 1 / 64)  # inside one arc (period 1.4, bounce at t = 1.4 - 0.1)
    path = P.arcs(times, np.zeros(2), g, 1.4, 0.1, drift=0.2)
    accel = np.diff(path, 2, axis=0) @ g
    accel_back = np.diff(path[::-1], 2, axis=0) @ g
    assert (accel > 0).all() and (accel_back > 0).all()


def test_glides_conserve_momentum_and_energy_through_collisions():
    radii = np.array([0.1, 0.08, 0.12])
    pos0 = np.array([[0.2, 0.5], [0.5, 0.52], [0.8, 0.2]])
    vel0 = np.array([[0.6, 0.0], [-0.3, 0.05], [0.0, 0.4]])
    _, vel = P.glide(np.arange(40) / 8, pos0, vel0, radii, 8)
    mass = radii ** 2
    momentum = (vel * mass[None, :, None]).sum(1)
    energy = (0.5 * mass[None] * (vel ** 2).sum(2)).sum(1)
    assert not np.allclose(vel[0], vel[-1])  # something collided
    np.testing.assert_allclose(momentum, np.broadcast_to(momentum[0], momentum.shape), atol=1e-12)
    np.testing.assert_allclose(energy, np.full_like(energy, energy[0]), rtol=1e-9)


def test_ripples_carry_no_brightness():
    look = R.Look(np.full(3, 80.0, np.float32), 1)
    drops = R.Drops(np.array([0.2]), np.array([[0.5, 0.5]]))
    times = np.arange(8) / 8
    frames = np.zeros((8, 64, 64, 3), np.float32)
    R.draw_ripples(frames, drops, times)
    assert np.abs(frames).max() > 5 and abs(frames.mean()) < 0.5
    assert look.background.mean() == 80.0


def test_objects_wrap_around_the_edges():
    body = R.Body("circle", 0.1, 0.0, (250.0, 250.0, 250.0))
    frames = np.zeros((1, 32, 32, 3), np.float32)
    R.draw_body(frames, np.array([[0.0, 0.5]]), body)
    assert frames[0, 16, 0].max() > 100 and frames[0, 16, 31].max() > 100


# ----------------------------------------------------------------------------------------------
# matched sets


@pytest.mark.parametrize("family", ["continuity", "shape_constancy"])
def test_every_frame_of_an_impossible_member_occurs_in_a_possible_one(family):
    """Spliced where the object is hidden: the frame multisets (and each frame index) of the impossible
    members are drawn from the possible members', so a bag of frames cannot tell them apart."""
    for index in range(3):
        made = _made(family, index)
        seg = {s["member"]: (s["possible"], made.frames[s["start"]:s["start"] + SEGMENT])
               for s in made.labels["segments"]}
        possible = [f for p, f in seg.values() if p]
        for member, (p, frames) in seg.items():
            if p:
                continue
            for t in range(SEGMENT):
                assert any(np.array_equal(frames[t], q[t]) for q in possible), (family, member, t)


def test_the_future_control_is_the_true_continuation_itself():
    for index in range(3):
        made = _made("future", index)
        seg = {s["member"]: made.frames[s["start"]:s["start"] + SEGMENT] for s in made.labels["segments"]}
        assert np.array_equal(seg["true"], seg["control"])
        switch = made.labels["switch"]
        for member in ("turned_left", "turned_right", "reversed_gravity"):  # the same context, another continuation
            assert np.array_equal(seg[member][:switch], seg["true"][:switch])
            assert not np.array_equal(seg[member], seg["true"])
