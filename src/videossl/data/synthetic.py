"""The built-in synthetic physics world: short videos whose ground truth can only be read from time.

Each video shows 1..max_objects shapes (circle / square / triangle) in a box under gravity that
points down, up, left or right. Objects bounce off the walls losing energy (restitution < 1) and
slide with Coulomb friction along the wall they rest on; in some videos a blob of dye diffuses
(its radius grows, its intensity fades) and in some the objects start as a pile that scatters.
Free flight alone is time-symmetric; the energy loss and the diffusion are what make the arrow of
time readable, the gravity direction is what a probe has to infer, and the velocity scale is the
`speed` label. The wall the objects fall towards is never drawn (the box *is* the frame), so a
single frame leaks as little of the gravity direction as possible.

The videos are written as real H.264 mp4 files (plus a JSON label sidecar) so that they take the
same decode path (decord / PyAV) as real footage.

Coordinates: the box is [0, 1]^2 in image orientation, x to the right and y downwards; a pixel
(row i, column j) of an S x S frame has its centre at ((j + 0.5) / S, (i + 0.5) / S).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videossl.config import SyntheticConfig

GRAVITY_NAMES = ("down", "up", "left", "right")  # label index = position
SHAPES = ("circle", "square", "triangle")

# Bump whenever the world or the renderer changes: it is part of the labels, so cached videos from
# an older generator never pass the "same labels" check in generate().
GENERATOR_VERSION = 2  # 2: YUV conversion in numpy (deterministic bytes)

# --- physics (box units, seconds) -------------------------------------------------------------
# Unit vectors in image coordinates (y points down), in GRAVITY_NAMES order.
GRAVITY_DIRECTIONS = np.array([[0.0, 1.0], [0.0, -1.0], [-1.0, 0.0], [1.0, 0.0]])
# A fall across the whole box from rest takes sqrt(2 / 2.5) ~= 0.89 s; a stronger pull settles the
# objects too early in a 4 s video.
GRAVITY_ACCEL = 2.5
# Fixed integration sub-step upper bound; each frame is split into ceil(frame_dt / this) steps.
MAX_SUBSTEP_S = 1.0 / 200.0
RESTITUTION_RANGE = (0.5, 0.85)
FRICTION_RANGE = (0.02, 0.2)  # Coulomb coefficient; sliding objects decelerate by friction * g
SPEED_RANGE = (0.5, 1.5)  # initial velocity scale, box units / s
# A floor impact slower than this (box/s) becomes resting contact instead of an endless series of
# sub-pixel bounces; it is a bounce of ~0.005 box height, under half a pixel at 96 px.
REST_SPEED = 0.15
# Objects start this far (as a fraction of the free range) above the floor, so the first fall is long.
START_HEIGHT_RANGE = (0.3, 1.0)
# Magnitude of an object's initial velocity relative to `speed`.
START_VELOCITY_RANGE = (0.5, 1.0)
# Initial velocities point at most this far (radians) off the floor direction, either way.
START_MAX_ELEVATION = math.pi / 3

# --- objects ----------------------------------------------------------------------------------
# Radius of the circle with the same area as the object, box units (~6-10 px at 96 px).
OBJECT_RADIUS_RANGE = (0.06, 0.11)
# Number of polygon sides per shape (0 = circle).
SHAPE_SIDES = {"circle": 0, "square": 4, "triangle": 3}
# Well separated, saturated RGB colours; objects and the dye draw distinct entries, so it needs at
# least max_objects + 1 (config allows up to 8 objects) entries.
PALETTE = np.array([
    [230, 60, 50], [60, 180, 75], [60, 110, 230], [250, 200, 40], [240, 130, 40],
    [160, 70, 200], [70, 210, 220], [240, 80, 180], [200, 240, 90], [250, 250, 250],
], dtype=np.float32)
# Plain dark, low-saturation background: a grey level plus a small per-channel tint.
BACKGROUND_GREY_RANGE = (25.0, 70.0)
BACKGROUND_TINT = 12.0
# Static per-video pixel texture (+- grey levels) so frames are not perfectly flat.
TEXTURE_AMPLITUDE = 4.0

# --- irreversible processes -------------------------------------------------------------------
DYE_PROBABILITY = 0.5
# The peak falls as sigma0^2 / sigma(t)^2, so a large start and slow diffusion keep the blob
# visible for the whole video (after 4 s it is still at ~1/4 to 1/2 of its initial opacity).
DYE_SIGMA0_RANGE = (0.06, 0.1)  # initial Gaussian radius, box units
DYE_DIFFUSION_RANGE = (0.001, 0.004)  # box^2 / s: sigma(t)^2 = sigma0^2 + 2 D t
DYE_INTENSITY0_RANGE = (0.8, 0.95)  # initial peak opacity
DYE_CENTRE_RANGE = (0.2, 0.8)
# "Pile falling apart": the objects start clustered and fly apart (needs >= 2 objects).
SCATTER_PROBABILITY = 0.3
SCATTER_CLUSTER_RADIUS = 0.08  # box units around the pile centre
SCATTER_CENTRE_HEIGHT_RANGE = (0.4, 0.8)  # fraction of the box above the floor
SCATTER_CENTRE_ACROSS_RANGE = (0.3, 0.7)  # position along the floor

# --- encoding ---------------------------------------------------------------------------------
X264_CRF = 18
X264_PRESET = "veryfast"  # as small as "fast" here at half the time

LABEL_FLOAT_DECIMALS = 4  # sampled floats are rounded first, so labels are exactly what was simulated


# ----------------------------------------------------------------------------------------------
# the world: everything random about one video, drawn from one seed


@dataclass(frozen=True, eq=False)  # eq=False: array fields have no single truth value
class World:
    """Every random choice of one video. Built by sample_world(); tests and tools may derive
    controlled scenes from one with dataclasses.replace()."""

    seed: int
    gravity: int  # index into GRAVITY_NAMES
    shapes: tuple[str, ...]
    radii: np.ndarray  # [N] equal-area radius, box units
    angles: np.ndarray  # [N] fixed orientation of polygons, radians
    colours: np.ndarray  # [N, 3] RGB
    pos0: np.ndarray  # [N, 2] initial centres
    vel0: np.ndarray  # [N, 2] initial velocities, box/s
    restitution: float
    friction: float
    speed: float
    scatter: bool
    dye: bool
    dye_centre: np.ndarray  # [2]
    dye_sigma0: float
    dye_diffusion: float
    dye_intensity0: float
    dye_colour: np.ndarray  # [3]
    background: np.ndarray  # [3]
    texture_seed: int

    @property
    def n_objects(self) -> int:
        return len(self.shapes)

    @property
    def gravity_vector(self) -> np.ndarray:
        return GRAVITY_DIRECTIONS[self.gravity] * GRAVITY_ACCEL


@dataclass(frozen=True, eq=False)  # eq=False: array fields have no single truth value
class Trajectory:
    """Per-frame simulation state (frame f is at time f / fps)."""

    times: np.ndarray  # [F]
    pos: np.ndarray  # [F, N, 2]
    vel: np.ndarray  # [F, N, 2]
    contact: np.ndarray  # [F, N] object touched a wall between frame f and f + 1
    height: np.ndarray  # [F, N] distance above the floor (the wall gravity points at)
    dye_radius: np.ndarray  # [F] Gaussian sigma of the dye blob (0 when the video has no dye)
    dye_intensity: np.ndarray  # [F] peak opacity of the dye blob (0 when the video has no dye)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return round(float(rng.uniform(*bounds)), LABEL_FLOAT_DECIMALS)


def _polygon_geometry(sides: int, radius: float, angle: float) -> tuple[float, np.ndarray]:
    """Apothem and outward edge normals [sides, 2] of the regular polygon with the area of a circle
    of `radius` (so shapes look equally big)."""
    apothem = radius * math.sqrt(math.pi / (sides * math.tan(math.pi / sides)))
    phis = angle + 2 * math.pi * np.arange(sides) / sides
    return apothem, np.stack([np.cos(phis), np.sin(phis)], axis=1)


def _support(shape: str, radius: float, angle: float) -> np.ndarray:
    """Extent of the object from its centre towards -x, +x, -y, +y: where it touches each wall."""
    sides = SHAPE_SIDES[shape]
    if sides == 0:
        return np.full(4, radius)
    apothem, _ = _polygon_geometry(sides, radius, angle)
    # vertices sit half-way between consecutive edge normals at the circumradius
    circumradius = apothem / math.cos(math.pi / sides)
    phis = angle + math.pi / sides + 2 * math.pi * np.arange(sides) / sides
    vx, vy = circumradius * np.cos(phis), circumradius * np.sin(phis)
    return np.array([-vx.min(), vx.max(), -vy.min(), vy.max()])


def _wall_limits(world: World) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest allowed centre coordinate per object and axis, [N, 2] each."""
    ext = np.array([_support(s, r, a) for s, r, a in zip(world.shapes, world.radii, world.angles)]).reshape(-1, 4)
    lo = ext[:, [0, 2]]
    hi = 1.0 - ext[:, [1, 3]]
    return lo, hi


def _start_state(rng: np.random.Generator, gravity: int, lo: np.ndarray, hi: np.ndarray,
                 speed: float, scatter: bool) -> tuple[np.ndarray, np.ndarray]:
    """Initial centres and velocities: high above the floor, moving (or a pile flying apart)."""
    n = len(lo)
    axis = int(np.argmax(np.abs(GRAVITY_DIRECTIONS[gravity])))  # 0: x (left / right), 1: y
    floor_is_hi = GRAVITY_DIRECTIONS[gravity][axis] > 0  # down / right: the floor is the far wall

    def above_floor(frac: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Coordinate along the gravity axis `frac` of the way from the floor to the ceiling."""
        return high - frac * (high - low) if floor_is_hi else low + frac * (high - low)

    pos = rng.uniform(lo, hi)
    if scatter:
        centre = np.empty(2)
        centre[1 - axis] = rng.uniform(*SCATTER_CENTRE_ACROSS_RANGE)
        centre[axis] = above_floor(rng.uniform(*SCATTER_CENTRE_HEIGHT_RANGE), 0.0, 1.0)
        # objects spread evenly around the centre and fly outwards from it
        phis = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n
        out = np.stack([np.cos(phis), np.sin(phis)], axis=1)
        pos = np.clip(centre + SCATTER_CLUSTER_RADIUS * out, lo, hi)
        vel = out * speed * rng.uniform(*START_VELOCITY_RANGE, size=(n, 1))
    else:
        pos[:, axis] = above_floor(rng.uniform(*START_HEIGHT_RANGE, size=n), lo[:, axis], hi[:, axis])
        # mostly along the floor (up to START_MAX_ELEVATION off it, either way), so objects keep
        # travelling across the box after their bounces have died down
        tangent_sign = rng.choice([-1.0, 1.0], size=n)
        elevation = rng.uniform(-START_MAX_ELEVATION, START_MAX_ELEVATION, size=n)
        vel = np.empty((n, 2))
        vel[:, 1 - axis] = tangent_sign * np.cos(elevation)
        vel[:, axis] = np.sin(elevation)
        vel *= speed * rng.uniform(*START_VELOCITY_RANGE, size=(n, 1))
    return pos, vel


def sample_world(seed: int, cfg: SyntheticConfig) -> World:
    """Draw every random choice of one video from `seed` (cheap: no simulation, no rendering)."""
    rng = np.random.default_rng(seed)
    gravity = int(rng.integers(len(GRAVITY_NAMES)))
    n = int(rng.integers(1, cfg.max_objects + 1))
    shapes = tuple(SHAPES[i] for i in rng.integers(len(SHAPES), size=n))
    radii = rng.uniform(*OBJECT_RADIUS_RANGE, size=n)
    angles = rng.uniform(0, 2 * np.pi, size=n)
    colour_idx = rng.permutation(len(PALETTE))  # distinct colours; the last one drawn goes to the dye
    restitution = _uniform(rng, RESTITUTION_RANGE)
    friction = _uniform(rng, FRICTION_RANGE)
    speed = _uniform(rng, SPEED_RANGE)
    scatter = n >= 2 and bool(rng.random() < SCATTER_PROBABILITY)
    dye = bool(rng.random() < DYE_PROBABILITY)
    background = rng.uniform(*BACKGROUND_GREY_RANGE) + rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=3)
    world = World(
        seed=seed, gravity=gravity, shapes=shapes, radii=radii, angles=angles,
        colours=PALETTE[colour_idx[:n]], pos0=np.zeros((n, 2)), vel0=np.zeros((n, 2)),
        restitution=restitution, friction=friction, speed=speed, scatter=scatter, dye=dye,
        dye_centre=rng.uniform(*DYE_CENTRE_RANGE, size=2),
        dye_sigma0=float(rng.uniform(*DYE_SIGMA0_RANGE)),
        dye_diffusion=float(rng.uniform(*DYE_DIFFUSION_RANGE)),
        dye_intensity0=float(rng.uniform(*DYE_INTENSITY0_RANGE)),
        dye_colour=PALETTE[colour_idx[n]], background=background.astype(np.float32),
        texture_seed=int(rng.integers(2**31)),
    )
    lo, hi = _wall_limits(world)
    pos0, vel0 = _start_state(rng, gravity, lo, hi, speed, scatter)
    return replace(world, pos0=pos0, vel0=vel0)


def frame_count(cfg: SyntheticConfig) -> int:
    return max(1, int(round(cfg.seconds * cfg.fps)))


def labels_for(world: World, cfg: SyntheticConfig) -> dict:
    """The JSON sidecar. Besides the physics labels it records how the video was made (size, fps,
    frames, gop, generator version) so a cached file is only reused when it would be identical."""
    processes = ["bounce", "slide"] + (["dye"] if world.dye else []) + (["scatter"] if world.scatter else [])
    return {
        "gravity": world.gravity,
        "gravity_name": GRAVITY_NAMES[world.gravity],
        "n_objects": world.n_objects,
        "shapes": list(world.shapes),
        "restitution": world.restitution,
        "friction": world.friction,
        "speed": world.speed,
        "processes": processes,
        "seed": int(world.seed),
        "frames": frame_count(cfg),
        "fps": cfg.fps,
        "size": cfg.size,
        "gop": cfg.gop,
        "version": GENERATOR_VERSION,
    }


# ----------------------------------------------------------------------------------------------
# simulation


def _collide(x: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray, e: float, mu: float,
             floor_axis: int, floor_is_hi: bool) -> np.ndarray:
    """Wall collisions, in place, for all objects. Returns the [N] "touched a wall" mask.

    Every impact reverses the normal velocity scaled by the restitution e. A slow impact on the
    floor becomes resting contact (normal velocity 0), and only then does Coulomb friction act on
    the tangential velocity: |dv_t| <= mu |dv_n|, i.e. a deceleration of mu * g while sliding.
    Bouncing impacts keep their tangential velocity (as if the objects rolled); with impact
    friction as well most objects stopped within the first second or two of a video.
    """
    touched = np.zeros(len(x), dtype=bool)
    for axis in (0, 1):
        tangent = 1 - axis
        for is_hi, limit in ((False, lo[:, axis]), (True, hi[:, axis])):
            hit = x[:, axis] > limit if is_hi else x[:, axis] < limit
            if not hit.any():
                continue
            v_in = v[hit, axis]
            v_out = -e * v_in
            # reflect the penetration, scaled like the velocity, rather than snapping to the wall
            x[hit, axis] = limit[hit] + e * (limit[hit] - x[hit, axis])
            if axis == floor_axis and is_hi == floor_is_hi:
                resting = np.abs(v_out) < REST_SPEED  # no endless sub-pixel bouncing
                v_out = np.where(resting, 0.0, v_out)
                vt = v[hit, tangent]
                slowdown = np.where(resting, mu * np.abs(v_in), 0.0)
                v[hit, tangent] = np.sign(vt) * np.maximum(np.abs(vt) - slowdown, 0.0)
            v[hit, axis] = v_out
            touched |= hit
    return touched


def simulate_world(world: World, cfg: SyntheticConfig) -> Trajectory:
    """Semi-implicit Euler with a fixed sub-step; the state is recorded at every frame time."""
    n_frames = frame_count(cfg)
    substeps = math.ceil(1.0 / (cfg.fps * MAX_SUBSTEP_S))
    dt = 1.0 / (cfg.fps * substeps)
    lo, hi = _wall_limits(world)
    g = world.gravity_vector
    floor_axis = int(np.argmax(np.abs(g)))
    floor_is_hi = bool(g[floor_axis] > 0)

    x, v = world.pos0.astype(np.float64).copy(), world.vel0.astype(np.float64).copy()
    pos = np.empty((n_frames, world.n_objects, 2))
    vel = np.empty_like(pos)
    contact = np.zeros((n_frames, world.n_objects), dtype=bool)
    for f in range(n_frames):
        pos[f], vel[f] = x, v
        for _ in range(substeps):
            v += g * dt  # velocity first, then position with the new velocity (semi-implicit)
            x += v * dt
            contact[f] |= _collide(x, v, lo, hi, world.restitution, world.friction, floor_axis, floor_is_hi)

    floor = hi[:, floor_axis] if floor_is_hi else lo[:, floor_axis]
    height = np.abs(floor[None, :] - pos[:, :, floor_axis])
    times = np.arange(n_frames) / cfg.fps
    dye_radius, dye_intensity = _dye_state(world, times)
    return Trajectory(times, pos, vel, contact, height, dye_radius, dye_intensity)


def _dye_state(world: World, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D diffusion of a Gaussian blob: sigma^2 grows linearly, the peak falls as 1/sigma^2 (the
    amount of dye is conserved), so the blob only ever grows and fades."""
    if not world.dye:
        return np.zeros_like(times), np.zeros_like(times)
    sigma2 = world.dye_sigma0**2 + 2.0 * world.dye_diffusion * times
    return np.sqrt(sigma2), world.dye_intensity0 * world.dye_sigma0**2 / sigma2


def simulate(seed: int, cfg: SyntheticConfig) -> Trajectory:
    return simulate_world(sample_world(seed, cfg), cfg)


# ----------------------------------------------------------------------------------------------
# rendering (vectorised over frames)


def _pixel_centres(size: int) -> np.ndarray:
    return ((np.arange(size) + 0.5) / size).astype(np.float32)


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
    """Composite one object into frames [F, S, S, 3] (float32) at per-frame centres [F, 2].
    Only a square window around the object is touched: per frame it is placed (and clamped inside
    the frame) around the centre, gathered with fancy indexing, blended and scattered back."""
    n_frames, size = frames.shape[0], frames.shape[1]
    extent = float(_support(shape, radius, angle).max())
    win = min(size, math.ceil(2 * extent * size) + 3)
    start = np.clip(np.floor(centres * size - win / 2).astype(np.int64), 0, size - win)  # [F, 2] (x, y)
    offs = np.arange(win)
    cols = start[:, 0, None] + offs  # [F, win]
    rows = start[:, 1, None] + offs
    coords = _pixel_centres(size)
    dx = coords[cols][:, None, :] - centres[:, 0, None, None].astype(np.float32)  # [F, 1, win]
    dy = coords[rows][:, :, None] - centres[:, 1, None, None].astype(np.float32)  # [F, win, 1]
    # coverage from the signed distance in pixels: a one-pixel linear ramp is cheap anti-aliasing
    cover = np.clip(0.5 - _signed_distance(shape, radius, angle, dx, dy) * size, 0.0, 1.0)
    index = (np.arange(n_frames)[:, None, None], rows[:, :, None], cols[:, None, :])
    patch = frames[index]
    frames[index] = patch + cover[..., None] * (colour - patch)


def _draw_dye(frames: np.ndarray, world: World, traj: Trajectory) -> None:
    """Full-frame Gaussian blob; separable, so the alpha is an outer product per frame."""
    coords = _pixel_centres(frames.shape[1])
    sigma = traj.dye_radius.astype(np.float32)[:, None]
    gx = np.exp(-0.5 * ((coords[None, :] - world.dye_centre[0]) / sigma) ** 2)  # [F, S]
    gy = np.exp(-0.5 * ((coords[None, :] - world.dye_centre[1]) / sigma) ** 2)
    alpha = traj.dye_intensity.astype(np.float32)[:, None, None] * gy[:, :, None] * gx[:, None, :]
    # frames += alpha * (colour - frames), in place: this is the one full-frame blend per video
    blend = np.subtract(world.dye_colour, frames)
    blend *= alpha[..., None]
    frames += blend


def _texture(world: World, size: int) -> np.ndarray:
    return np.random.default_rng(world.texture_seed).uniform(
        -TEXTURE_AMPLITUDE, TEXTURE_AMPLITUDE, size=(size, size, 1)).astype(np.float32)


def render(world: World, traj: Trajectory, size: int) -> np.ndarray:
    """uint8 frames [F, S, S, 3]: background, dye underneath, objects in order, static texture."""
    frames = np.empty((len(traj.times), size, size, 3), dtype=np.float32)
    frames[:] = world.background
    if world.dye:
        _draw_dye(frames, world, traj)
    for i, shape in enumerate(world.shapes):
        _draw_object(frames, traj.pos[:, i], shape, float(world.radii[i]), float(world.angles[i]), world.colours[i])
    frames += _texture(world, size)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def render_video(seed: int, cfg: SyntheticConfig) -> tuple[np.ndarray, dict]:
    """frames uint8 [F, H, W, 3] (F = round(cfg.seconds*cfg.fps), H=W=cfg.size) and the labels dict"""
    world = sample_world(seed, cfg)
    traj = simulate_world(world, cfg)
    return render(world, traj, cfg.size), labels_for(world, cfg)


# ----------------------------------------------------------------------------------------------
# encoding and the dataset


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> planar YUV 4:2:0 [H*3/2, W] (BT.601, limited range), in exact integer math.

    Done here rather than by swscale inside the encoder: once, two `make run`s of the same code wrote
    2 of 64 videos with different bytes (and a different dataset digest) although rendering, x264
    (one thread) and decoding were each deterministic when tested alone; swscale's threaded/SIMD
    conversion was the one part of the write path not pinned down. Not reproduced in 8 later runs;
    with integer arithmetic here, the bytes depend on the frames and x264 alone."""
    h, w, _ = rgb.shape
    r, g, b = (rgb[..., c].astype(np.int32) for c in range(3))
    y = (66 * r + 129 * g + 25 * b + 128 >> 8) + 16
    # chroma from the 2x2 block average (sum of 4, rounded), as 4:2:0 subsampling does
    r2, g2, b2 = ((c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2] + 2) >> 2 for c in (r, g, b))
    u = (-38 * r2 - 74 * g2 + 112 * b2 + 128 >> 8) + 128
    v = (112 * r2 - 94 * g2 - 18 * b2 + 128 >> 8) + 128
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = np.clip(y, 0, 255)
    out[h:h + h // 4] = np.clip(u, 0, 255).reshape(h // 4, w)
    out[h + h // 4:] = np.clip(v, 0, 255).reshape(h // 4, w)
    return out


def write_video(frames: np.ndarray, path: Path, fps: int, gop: int) -> None:
    """H.264 (libx264, yuv420p) mp4 via PyAV, keyframe every `gop` frames, deterministic output
    (threads=1), atomic (write to tmp then os.replace)"""
    n_frames, height, width, _ = frames.shape
    if height % 2 or width % 2:
        # yuv420p subsamples chroma 2x2, libx264 refuses odd sizes
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height} (use an even synthetic.size)")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps, options={
                "crf": str(X264_CRF), "preset": X264_PRESET,
                # fixed GOP: keyframes exactly every `gop` frames (no scene-cut keyframes), no
                # B-frames (decode order = display order), one thread (bit-exact re-runs); frames arrive
                # as YUV made by rgb_to_yuv420p, so no colour conversion happens in the encoder
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:threads=1",
            })
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            time_base = Fraction(1, fps)
            for i in range(n_frames):
                frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frames[i]), format="yuv420p")
                frame.pts, frame.time_base = i, time_base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def video_seed(base_seed: int, index: int) -> int:
    """Independent, reproducible seed of video `index` (SeedSequence mixes both numbers)."""
    entropy = [base_seed & 0xFFFFFFFFFFFFFFFF, index]  # SeedSequence wants non-negative ints
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def _is_cached(mp4: Path, sidecar: Path, labels: dict) -> bool:
    if not (mp4.is_file() and sidecar.is_file()):
        return False
    try:
        return json.loads(sidecar.read_text()) == labels
    except (OSError, ValueError):
        return False


def generate(cfg: SyntheticConfig, out_dir: Path) -> list[Path]:
    """writes out_dir/synth_{i:04d}.mp4 and out_dir/synth_{i:04d}.json for i in range(cfg.videos);
    video i uses seed derived deterministically from (cfg.seed, i); returns the mp4 paths in order.
    Skips a video whose mp4+json already exist with the same labels json (so re-runs are cheap)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(cfg.videos):
        seed = video_seed(cfg.seed, i)
        mp4, sidecar = out_dir / f"synth_{i:04d}.mp4", out_dir / f"synth_{i:04d}.json"
        world = sample_world(seed, cfg)
        labels = labels_for(world, cfg)
        if not _is_cached(mp4, sidecar, labels):
            frames = render(world, simulate_world(world, cfg), cfg.size)
            write_video(frames, mp4, cfg.fps, cfg.gop)
            _write_json_atomic(labels, sidecar)  # after the mp4: a sidecar implies a complete video
        paths.append(mp4)
    return paths
