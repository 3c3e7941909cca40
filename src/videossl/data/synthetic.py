"""The built-in synthetic physics world: short videos whose temporal labels only time can give.

The scene is a pond seen from above, wrapped around at the edges (a torus: what leaves one side comes
back on the other), with no floor, walls or resting pile anywhere:

- **Sinking objects.** 1..max_objects shapes (one shape per video) sink through the water towards
  the gravity direction (down, up, left or right) at a fixed terminal speed. Now and then an object
  is kicked (a Poisson process; in any direction, at about the sinking speed), and Stokes drag
  relaxes it back to sinking. Positions are uniform in every frame (the torus has no preferred
  place), so a single frame says nothing about gravity: only motion does. (A bag of frames is a
  long exposure of its clip, streaked along the axis things sink on; a streak has no direction, so
  the bag cannot tell down from up, and a linear probe cannot even read the axis:
  tests/integration/test_benchmark_world.py measures both.)
- **Ripples.** Raindrops hit the water at random places and times; each ring expands at a fixed
  speed and fades. Radiation spreading outwards is irreversible: played backwards, rings contract
  and vanish into a point. Ripples are zero-mean brightness waves, so the picture's average
  brightness carries no arrow, and a ripple is in view at any time, so every clip carries the cue.
  Drag is a second irreversible process: a kick decays forwards, grows backwards.
- **Speed.** The terminal speed, the ripple speed and the drag rate are constants of the world, and
  the kick speed varies by a few percent only, so playback speed (1x/2x/4x) shows in how far things
  move per frame, not in how the video looks.

The simulator records, for every frame, how much ripple wavefront travelled (`irreversibility`:
grey levels x pixels): a clip whose sum is small cannot show its direction, and the benchmark
reports arrow-of-time accuracy on all clips and on the determinable ones.

Two worlds are drawn from these physics: the **benchmark** (the evaluation world: a balanced design
of gravity x object count x shape, split train/val/test within each cell) and the **pool** (the
pretraining world: its own seed, never evaluated on). Videos are written as real H.264 files plus a
JSON label sidecar, so they take the same decode path (decord / PyAV) as real footage.

Coordinates: the box is [0, 1)^2 in image orientation, x to the right and y downwards; a pixel
(row i, column j) of an S x S frame has its centre at ((j + 0.5) / S, (i + 0.5) / S).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videossl.config import SyntheticConfig
from videossl.data.encode import write_video
from videossl.storage import write_text_atomic

GRAVITY_NAMES = ("down", "up", "left", "right")  # label index = position
SHAPES = ("circle", "square", "triangle")
WORLDS = ("benchmark", "pool")
SPLIT_NAMES = ("train", "val", "test")

# Bump whenever the world or the renderer changes: it is part of the labels, so cached videos from
# an older generator never pass the "same labels" check in generate().
GENERATOR_VERSION = 4  # 3: torus pond, sinking objects kicked sideways, ripples; 4: kicks in any direction

# --- physics (box units, seconds) -------------------------------------------------------------
# Unit vectors in image coordinates (y points down), in GRAVITY_NAMES order.
GRAVITY_DIRECTIONS = np.array([[0.0, 1.0], [0.0, -1.0], [-1.0, 0.0], [1.0, 0.0]])
TERMINAL_SPEED = 0.4   # sinking speed along gravity: 1.6 px per frame at 32 px and 8 fps
DRAG_RATE = 3.0        # 1/s: a kick relaxes back to sinking with a time constant of 1/3 s
KICK_RATE = 0.7        # kicks per object and second (Poisson); a kick replaces the velocity
KICK_SPEED = 0.4       # speed right after a kick, in a uniformly random direction ...
KICK_SPEED_JITTER = 0.1  # ... times 1 +- this: speeds stay narrow, so speed is a playback property
SUBSTEPS = 8           # integration steps per frame (kicks land between frames)

RIPPLE_RATE = 1.5      # raindrops per second over the whole pond: 2-4 rings in view at any time
RIPPLE_SPEED = 0.35    # box/s: the ring radius grows 1.4 px per frame at 32 px and 8 fps
RIPPLE_WIDTH = 0.04    # box units: the ring's crest-to-trough half width
RIPPLE_AMPLITUDE = 80.0  # grey levels of the brightness wave at its peak (before the fade)
RIPPLE_RISE = 0.15     # s: the ring's amplitude rises with this time constant ...
RIPPLE_DECAY = 0.8     # s: ... and fades with this one
RIPPLE_LIFE = RIPPLE_RISE + 5 * RIPPLE_DECAY  # after this a ring is < 1% of its peak: stop drawing it
RIPPLE_START_RADIUS = 2 * RIPPLE_WIDTH  # a ring is born as a ring, not as a bright dot
RIPPLE_VISIBLE = 0.25  # grey levels: a fainter ring rounds away in uint8 frames, so it is not drawn

# --- objects ----------------------------------------------------------------------------------
OBJECT_RADIUS_RANGE = (0.09, 0.12)  # radius of the circle with the same area (3-4 px at 32 px)
SHAPE_SIDES = {"circle": 0, "square": 4, "triangle": 3}
# Well separated, saturated RGB colours; each object of a video draws a distinct one.
PALETTE = np.array([
    [230, 60, 50], [60, 180, 75], [60, 110, 230], [250, 200, 40], [240, 130, 40],
    [160, 70, 200], [70, 210, 220], [240, 80, 180], [200, 240, 90], [250, 250, 250],
], dtype=np.float32)
# Mid-grey water with a small per-channel tint over a static pond bed: blotches (a smooth random field
# of BED_CELLS x BED_CELLS, +- BED_AMPLITUDE grey levels at one standard deviation) and fine grain
# (+- TEXTURE_AMPLITUDE). The bed is what a frame's statistics are mostly made of, as in real footage
# where the static scene dominates: how much a clip's average frame is smoothed by motion (which
# grows with playback speed) is then small beside how different two pond beds are.
BACKGROUND_GREY_RANGE = (60.0, 100.0)
BACKGROUND_TINT = 10.0
BED_CELLS = 4
BED_AMPLITUDE = 10.0
TEXTURE_AMPLITUDE = 3.0

LABEL_DECIMALS = 2  # per-frame records in the sidecar are rounded: labels stay small and exact


# ----------------------------------------------------------------------------------------------
# the world: everything random about one video, drawn from one seed


@dataclass(frozen=True, eq=False)  # eq=False: array fields have no single truth value
class World:
    """Every random choice of one video but its kicks (simulate_world draws those from the seed)."""

    seed: int
    gravity: int  # index into GRAVITY_NAMES
    shape: str
    radii: np.ndarray     # [N] equal-area radius, box units
    angles: np.ndarray    # [N] fixed orientation of polygons, radians
    colours: np.ndarray   # [N, 3] RGB
    pos0: np.ndarray      # [N, 2] initial centres, uniform on the torus
    vel0: np.ndarray      # [N, 2] initial velocities, drawn from the stationary mix of kicked and sinking
    ripple_births: np.ndarray   # [R] seconds (negative: born before the video starts)
    ripple_centres: np.ndarray  # [R, 2]
    background: np.ndarray  # [3]
    texture_seed: int

    @property
    def n_objects(self) -> int:
        return len(self.radii)

    @property
    def terminal_velocity(self) -> np.ndarray:
        return GRAVITY_DIRECTIONS[self.gravity] * TERMINAL_SPEED


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Per-frame state (frame f is at time f / fps)."""

    times: np.ndarray            # [F]
    pos: np.ndarray              # [F, N, 2] centres, wrapped into [0, 1)
    vel: np.ndarray              # [F, N, 2]
    ripple_radius: np.ndarray    # [F, R] box units
    ripple_amplitude: np.ndarray  # [F, R] grey levels (0 before birth)
    dissipated: np.ndarray       # [F] kinetic energy of the kicks that drag removed before frame f + 1
    irreversibility: np.ndarray  # [F] ripple wavefront travel to frame f + 1: grey levels x pixels


def frame_count(cfg: SyntheticConfig) -> int:
    return max(1, int(round(cfg.seconds * cfg.fps)))


def kick_velocities(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 2] velocities right after a kick: a uniformly random direction at KICK_SPEED x (1 +- jitter)."""
    phi = rng.uniform(0, 2 * np.pi, n)
    speed = KICK_SPEED * (1 + rng.uniform(-KICK_SPEED_JITTER, KICK_SPEED_JITTER, n))
    return np.stack([np.cos(phi), np.sin(phi)], axis=1) * speed[:, None]


def sample_world(seed: int, cfg: SyntheticConfig, gravity: int | None = None, n_objects: int | None = None,
                 shape: int | None = None) -> World:
    """Draw one video's world from `seed`; the benchmark's design fixes gravity, count and shape."""
    rng = np.random.default_rng(seed)
    g = int(rng.integers(len(GRAVITY_NAMES))) if gravity is None else gravity
    n = int(rng.integers(1, cfg.max_objects + 1)) if n_objects is None else n_objects
    s = int(rng.integers(len(SHAPES))) if shape is None else shape
    colour_idx = rng.permutation(len(PALETTE))[:n]
    # the stationary state: time since each object's last kick is exponential, its kick part decayed
    since = rng.exponential(1.0 / KICK_RATE, n)
    v_term = GRAVITY_DIRECTIONS[g] * TERMINAL_SPEED
    vel0 = v_term + (kick_velocities(rng, n) - v_term) * np.exp(-DRAG_RATE * since)[:, None]
    # ripples born over [-RIPPLE_LIFE, seconds): the first frame already shows rings of every age
    n_ripples = int(rng.poisson(RIPPLE_RATE * (cfg.seconds + RIPPLE_LIFE)))
    background = rng.uniform(*BACKGROUND_GREY_RANGE) + rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=3)
    return World(
        seed=seed, gravity=g, shape=SHAPES[s],
        radii=rng.uniform(*OBJECT_RADIUS_RANGE, size=n), angles=rng.uniform(0, 2 * np.pi, size=n),
        colours=PALETTE[colour_idx], pos0=rng.uniform(0, 1, size=(n, 2)), vel0=vel0,
        ripple_births=rng.uniform(-RIPPLE_LIFE, cfg.seconds, size=n_ripples),
        ripple_centres=rng.uniform(0, 1, size=(n_ripples, 2)),
        background=background.astype(np.float32), texture_seed=int(rng.integers(2**31)),
    )


# ----------------------------------------------------------------------------------------------
# simulation


def ripple_state(world: World, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radius [F, R] (box units) and amplitude [F, R] (grey levels) of every ripple at `times`."""
    age = times[:, None] - world.ripple_births[None, :]
    alive = age > 0
    a = np.where(alive, age, 0.0)
    amplitude = RIPPLE_AMPLITUDE * (1 - np.exp(-a / RIPPLE_RISE)) * np.exp(-a / RIPPLE_DECAY) * alive
    return RIPPLE_START_RADIUS + RIPPLE_SPEED * a, amplitude


def simulate_world(world: World, cfg: SyntheticConfig) -> Trajectory:
    """Drag towards the terminal velocity (exact per sub-step), Poisson kicks between sub-steps (a kick
    replaces the sideways velocity; the sinking is untouched)."""
    n_frames, n = frame_count(cfg), world.n_objects
    dt = 1.0 / (cfg.fps * SUBSTEPS)
    relax = math.exp(-DRAG_RATE * dt)
    v_term = world.terminal_velocity
    rng = np.random.default_rng([world.seed, 1])  # the kicks: their own stream of the video's seed
    x, v = world.pos0.astype(np.float64).copy(), world.vel0.astype(np.float64).copy()
    pos, vel = np.empty((n_frames, n, 2)), np.empty((n_frames, n, 2))
    dissipated = np.zeros(n_frames)
    for f in range(n_frames):
        pos[f], vel[f] = x, v
        for _ in range(SUBSTEPS):
            kicked = rng.random(n) < KICK_RATE * dt
            if kicked.any():
                v[kicked] = kick_velocities(rng, int(kicked.sum()))
            transient = v - v_term
            dissipated[f] += 0.5 * float((transient ** 2).sum()) * (1 - relax ** 2)
            v = v_term + transient * relax
            x = x + v * dt
    times = np.arange(n_frames) / cfg.fps
    radius, amplitude = ripple_state(world, times)
    step_px = RIPPLE_SPEED / cfg.fps * cfg.size  # how far every ring's front moves per frame
    return Trajectory(times, pos % 1.0, vel, radius, amplitude, dissipated, amplitude.sum(1) * step_px)


# ----------------------------------------------------------------------------------------------
# rendering (vectorised over frames)


def _pixel_centres(size: int) -> np.ndarray:
    return ((np.arange(size) + 0.5) / size).astype(np.float32)


def _wrapped(d: np.ndarray) -> np.ndarray:
    """Offsets on the torus, into [-0.5, 0.5)."""
    return (d + 0.5) % 1.0 - 0.5


def _polygon_geometry(sides: int, radius: float, angle: float) -> tuple[float, np.ndarray]:
    """Apothem and outward edge normals [sides, 2] of the regular polygon with the area of a circle
    of `radius` (so shapes look equally big)."""
    apothem = radius * math.sqrt(math.pi / (sides * math.tan(math.pi / sides)))
    phis = angle + 2 * math.pi * np.arange(sides) / sides
    return apothem, np.stack([np.cos(phis), np.sin(phis)], axis=1)


def _signed_distance(shape: str, radius: float, angle: float, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Signed distance (box units, < 0 inside) from the object centre offsets dx, dy (broadcastable).
    For polygons it is max over edges of the half-plane distances: exact inside and near the edges,
    which is all the anti-aliasing needs."""
    sides = SHAPE_SIDES[shape]
    if sides == 0:
        return np.sqrt(dx * dx + dy * dy) - radius
    apothem, normals = _polygon_geometry(sides, radius, angle)
    d = None
    for nx, ny in normals.astype(np.float32):
        proj = nx * dx + ny * dy
        d = proj if d is None else np.maximum(d, proj)
    return d - np.float32(apothem)


def _draw_object(frames: np.ndarray, centres: np.ndarray, shape: str, radius: float, angle: float,
                 colour: np.ndarray) -> None:
    """Composite one object into frames [F, S, S, 3] (float32) at per-frame centres [F, 2]. Only a
    square window around the object is touched; its rows and columns wrap around the frame."""
    n_frames, size = frames.shape[0], frames.shape[1]
    win = min(size, math.ceil(2 * radius * 1.5 * size) + 3)  # 1.5: a triangle's circumradius / radius
    start = np.floor(centres * size - win / 2).astype(np.int64)  # [F, 2] (x, y), may be negative
    offs = np.arange(win)
    cols, rows = (start[:, 0, None] + offs) % size, (start[:, 1, None] + offs) % size  # [F, win]
    coords = _pixel_centres(size)
    dx = _wrapped(coords[cols][:, None, :] - centres[:, 0, None, None].astype(np.float32))  # [F, 1, win]
    dy = _wrapped(coords[rows][:, :, None] - centres[:, 1, None, None].astype(np.float32))  # [F, win, 1]
    # coverage from the signed distance in pixels: a one-pixel linear ramp is cheap anti-aliasing
    cover = np.clip(0.5 - _signed_distance(shape, radius, angle, dx, dy) * size, 0.0, 1.0)
    index = (np.arange(n_frames)[:, None, None], rows[:, :, None], cols[:, None, :])
    patch = frames[index]
    frames[index] = patch + cover[..., None] * (colour - patch)


def _draw_ripples(frames: np.ndarray, world: World, traj: Trajectory) -> None:
    """Brightness waves: per ring, a crest inside and a trough outside its front. The profile
    -z exp(-z^2 / 2) of the distance z from the front is odd, and the factor radius / distance makes
    it odd in area too (the outer lobe has more pixels), so a ring adds no brightness overall. On the
    torus a ring wider than the pond overlaps itself: it is drawn around the 3 x 3 nearest images of
    its centre (by then it has faded to a few grey levels). Only frames where the ring is visible
    (above RIPPLE_VISIBLE grey levels) and its band crosses the frame are computed."""
    size = frames.shape[1]
    coords = _pixel_centres(size)
    reach = 4 * RIPPLE_WIDTH  # beyond 4 widths from the front the profile is < 0.1% of its peak
    for r, (cx, cy) in enumerate(world.ripple_centres.astype(np.float32)):
        visible = traj.ripple_amplitude[:, r] > RIPPLE_VISIBLE
        if not visible.any():
            continue
        for ox, oy in itertools.product((-1.0, 0.0, 1.0), repeat=2):
            d = np.sqrt((coords[None, :] - cx - ox) ** 2 + (coords[:, None] - cy - oy) ** 2)  # [S, S]
            rad = traj.ripple_radius[:, r]
            live = np.flatnonzero(visible & (rad + reach > d.min()) & (rad - reach < d.max()))
            if not len(live):
                continue
            d = np.maximum(d, 0.5 / size)[None]
            radius = rad[live, None, None].astype(np.float32)
            z = (d - radius) / RIPPLE_WIDTH
            amplitude = traj.ripple_amplitude[live, r, None, None].astype(np.float32)
            frames[live] += (amplitude * -z * np.exp(-0.5 * z * z) * radius / d)[..., None]


def _texture(world: World, size: int) -> np.ndarray:
    """[S, S, 1] the static pond bed: a smooth periodic field (bilinear over a BED_CELLS torus grid)
    plus fine grain."""
    rng = np.random.default_rng(world.texture_seed)
    grid = rng.normal(0.0, BED_AMPLITUDE, size=(BED_CELLS, BED_CELLS))
    u = _pixel_centres(size) * BED_CELLS - 0.5  # cell coordinates of pixel centres
    i0 = np.floor(u).astype(np.int64)
    f = (u - i0).astype(np.float32)
    a, b = i0 % BED_CELLS, (i0 + 1) % BED_CELLS
    rows = grid[a] * (1 - f)[:, None] + grid[b] * f[:, None]  # [S, cells]: along y
    bed = rows[:, a] * (1 - f)[None, :] + rows[:, b] * f[None, :]  # [S, S]: then along x
    grain = rng.uniform(-TEXTURE_AMPLITUDE, TEXTURE_AMPLITUDE, size=(size, size))
    return (bed + grain).astype(np.float32)[..., None]


def render(world: World, traj: Trajectory, size: int) -> np.ndarray:
    """uint8 frames [F, S, S, 3]: water, ripples, objects, static texture."""
    frames = np.empty((len(traj.times), size, size, 3), dtype=np.float32)
    frames[:] = world.background
    _draw_ripples(frames, world, traj)
    for i in range(world.n_objects):
        _draw_object(frames, traj.pos[:, i], world.shape, float(world.radii[i]), float(world.angles[i]),
                     world.colours[i])
    frames += _texture(world, size)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# labels, the benchmark's design, and the dataset on disk


def labels_for(world: World, traj: Trajectory, cfg: SyntheticConfig, split: str | None = None) -> dict:
    """The JSON sidecar: the physics labels, per-frame records, and how the video was made (size, fps,
    frames, gop, crf, generator version) so a cached file is only reused when it would be identical."""
    out = {
        "gravity": world.gravity,
        "gravity_name": GRAVITY_NAMES[world.gravity],
        "n_objects": world.n_objects,
        "shape": world.shape,
        "shapes": [world.shape] * world.n_objects,
        "processes": ["drag", "ripples"],
        "irreversibility": np.round(traj.irreversibility, LABEL_DECIMALS).tolist(),
        "seed": int(world.seed),
        "frames": frame_count(cfg),
        "fps": cfg.fps,
        "size": cfg.size,
        "gop": cfg.gop,
        "crf": cfg.crf,
        "version": GENERATOR_VERSION,
    }
    if split is not None:
        out["split"] = split
    return out


def render_video(seed: int, cfg: SyntheticConfig, **design) -> tuple[np.ndarray, dict]:
    """frames uint8 [F, S, S, 3] (F = round(seconds * fps), S = size) and the labels dict."""
    world = sample_world(seed, cfg, **design)
    traj = simulate_world(world, cfg)
    return render(world, traj, cfg.size), labels_for(world, traj, cfg)


def video_seed(base_seed: int, index: int) -> int:
    """Independent, reproducible seed of video `index` (SeedSequence mixes both numbers)."""
    entropy = [base_seed & 0xFFFFFFFFFFFFFFFF, index]  # SeedSequence wants non-negative ints
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class Plan:
    """One video to make: its index, seed, the benchmark design's choices (None: drawn) and split."""
    index: int
    seed: int
    gravity: int | None
    n_objects: int | None
    shape: int | None
    split: str


def benchmark_plan(cfg: SyntheticConfig) -> list[Plan]:
    """A balanced design: every (gravity, object count, shape) cell gets the same number of videos
    (cells take turns), and each cell's videos are split train/val/test in the configured
    proportions, so every split sees every label equally often (no label-prior shift)."""
    b = cfg.benchmark
    cells = list(itertools.product(range(len(GRAVITY_NAMES)), range(1, cfg.max_objects + 1), range(len(SHAPES))))
    rng = np.random.default_rng([b.seed, 2])
    order = rng.permutation(len(cells))
    members: dict[int, list[int]] = {c: [] for c in range(len(cells))}
    for i in range(b.videos):
        members[int(order[i % len(cells)])].append(i)
    split_of: dict[int, str] = {}
    edges = np.cumsum([b.splits[s] for s in SPLIT_NAMES])
    for videos in members.values():
        # position k of m in a cell -> the split whose share of the cell covers (k + 0.5) / m
        for k, i in enumerate(rng.permutation(videos)):
            split_of[int(i)] = SPLIT_NAMES[min(int(np.searchsorted(edges, (k + 0.5) / len(videos))), 2)]
    return [Plan(i, video_seed(b.seed, i), *cells[int(order[i % len(cells)])], split=split_of[i])
            for i in range(b.videos)]


def pool_plan(cfg: SyntheticConfig) -> list[Plan]:
    """Free draws; every 1/val_fraction-th video is held out (the objectives' held-out accuracies)."""
    p = cfg.pool
    held = set(np.round(np.arange(0, p.videos, 1 / p.val_fraction)).astype(int).tolist()) if p.val_fraction else set()
    return [Plan(i, video_seed(p.seed, i), None, None, None, "val" if i in held else "train")
            for i in range(p.videos)]


def _is_cached(mp4: Path, sidecar: Path, labels: dict) -> bool:
    if not (mp4.is_file() and sidecar.is_file()):
        return False
    try:
        return json.loads(sidecar.read_text()) == labels
    except (OSError, ValueError):
        return False


def _make(job: tuple[SyntheticConfig, Plan, Path]) -> Path:
    """Render and encode one video unless an identical one is on disk (the mp4 first: a sidecar
    implies a complete video)."""
    cfg, plan, out_dir = job
    world = sample_world(plan.seed, cfg, plan.gravity, plan.n_objects, plan.shape)
    traj = simulate_world(world, cfg)
    labels = labels_for(world, traj, cfg, plan.split)
    mp4 = out_dir / f"{plan.index:05d}.mp4"
    sidecar = mp4.with_suffix(".json")
    if not _is_cached(mp4, sidecar, labels):
        write_video(render(world, traj, cfg.size), mp4, cfg.fps, cfg.gop, cfg.crf)
        write_text_atomic(sidecar, json.dumps(labels, sort_keys=True) + "\n")
    return mp4


def generate(cfg: SyntheticConfig, which: str, out_dir: Path, progress=None) -> list[Path]:
    """Writes out_dir/{i:05d}.mp4 + .json for every video of world `which` ("benchmark" or "pool"),
    in `cfg.workers` processes; returns the mp4 paths in order. Videos already on disk with the same
    labels are not made again, so re-runs are cheap. `progress(n)` is called as videos finish."""
    if which not in WORLDS:
        raise ValueError(f"unknown synthetic world {which!r} (one of {WORLDS})")
    plans = benchmark_plan(cfg) if which == "benchmark" else pool_plan(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(cfg, p, out_dir) for p in plans]
    workers = min(cfg.workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        results = []
        for job in jobs:
            results.append(_make(job))
            if progress:
                progress(1)
        return results
    # spawned, not forked: the caller may hold threads (MLflow, torch) that a fork would copy mid-lock;
    # chunks keep the per-task overhead small
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = []
        for path in pool.map(_make, jobs, chunksize=16):
            results.append(path)
            if progress:
                progress(1)
    return results
