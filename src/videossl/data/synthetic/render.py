"""Drawing the world, vectorised over frames: the static bed, ripples, dye, objects and screens.

Coordinates: the box is [0, 1)^2 in image orientation, x to the right and y downwards; pixel (row i,
column j) of an S x S frame has its centre at ((j + 0.5) / S, (i + 0.5) / S). The box is a torus:
what leaves one side comes back on the other, so objects, rings and blobs wrap around the edges and
no place in a frame is special (no floor, no wall, no corner where things collect).

Layers, back to front: water (a tinted grey), ripples and dye (brightness waves and spreading ink in the
water), objects (polygons may spin), screens (opaque bars that hide what passes behind them, standing or
sliding at a constant velocity), and the bed's fine grain over everything (a fixed pattern, like a
sensor's). The renderer draws what physics.py computed; it adds no motion of its own.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle")
SHAPE_SIDES = {"circle": 0, "square": 4, "triangle": 3}
# Well separated, saturated RGB colours; each object of a scene draws a distinct one.
PALETTE = np.array([
    [230, 60, 50], [60, 180, 75], [60, 110, 230], [250, 200, 40], [240, 130, 40],
    [160, 70, 200], [70, 210, 220], [240, 80, 180], [200, 240, 90], [250, 250, 250],
], dtype=np.float32)
# Mid-grey water with a small per-channel tint over a static bed of blotches (a smooth random field of
# BED_CELLS x BED_CELLS cells, +- BED_AMPLITUDE grey levels) and fine grain (+- TEXTURE_AMPLITUDE): the
# static scene is most of what a frame is made of, as in real footage.
BACKGROUND_GREY_RANGE = (60.0, 100.0)
BACKGROUND_TINT = 10.0
BED_CELLS = 4
BED_AMPLITUDE = 10.0
TEXTURE_AMPLITUDE = 3.0

# Ripples: rings expanding from where a raindrop hit; a crest inside and a trough outside the front.
RIPPLE_SPEED = 0.35    # box/s: the front moves 1.4 px per frame at 32 px and 8 fps
RIPPLE_WIDTH = 0.04    # box units: the ring's crest-to-trough half width
# grey levels at the peak (before the fade). Measured: at 80 the rings dominate what changes between frames
# and the supervised ceiling learns gravity to only 0.6 in 300 steps (0.96 at 30); rings stay well above
# the grain (RIPPLE_VISIBLE) and their arrow of time is as easy to learn.
RIPPLE_AMPLITUDE = 30.0
RIPPLE_RISE = 0.15     # s: the amplitude rises with this time constant ...
RIPPLE_DECAY = 0.8     # s: ... and fades with this one
RIPPLE_LIFE = RIPPLE_RISE + 5 * RIPPLE_DECAY  # after this a ring is < 1% of its peak: not drawn
RIPPLE_START_RADIUS = 2 * RIPPLE_WIDTH  # a ring is born as a ring, not as a bright dot
RIPPLE_VISIBLE = 2.0   # grey levels: a fainter ring drowns in the bed's grain (+- TEXTURE_AMPLITUDE) and is not drawn

# Dye (the benchmark's held-out process, never in the pretraining pool): a drop lands and spreads over the
# water as a disc whose rim moves out at a constant speed while its tint thins as 1 / radius (it soaks
# into the water as it spreads). It seeps in and bleaches at the same rate (a symmetric envelope), and
# the thinning keeps how much its rim changes a frame (perimeter x tint x speed) about constant, so how
# much a frame changes says little about time's direction: the spreading does. Measured: a diffusing
# Gaussian blob, or a disc conserving its ink (tint ~ 1 / area, a faint rim), is not learned at all by
# the supervised ceiling in 300 steps; this one is (0.98-0.99).
DYE_RADIUS_RANGE = (0.06, 0.08)  # box units: the drop as it lands (1.9-2.6 px at 32 px)
DYE_SPEED = 0.3        # box/s: the rim's speed (1.2 px a frame at 32 px and 8 fps)
DYE_LIFE = 1.2         # s: it reaches ~0.85 box across, thinned to a sixth of its landing tint
DYE_FADE = 0.2         # s: it seeps in over this long and bleaches over as long at the end
DYE_RIM = 1.0          # px: the disc's soft edge
DYE_AMPLITUDE = 70.0   # grey levels of the tint of a drop as it lands
DYE_TINTS = np.array([[-1.0, -1.0, -0.4], [-0.4, -1.0, -1.0], [-1.0, -0.4, -1.0]], dtype=np.float32)  # dark inks

SCREEN_GREY = 150.0    # screens: light grey bars with dark stripes, opaque
SCREEN_STRIPE = 35.0   # grey levels of the stripes (period SCREEN_STRIPE_PERIOD px), so a screen reads as a thing
SCREEN_STRIPE_PERIOD = 4


@dataclass(frozen=True, eq=False)  # eq=False: array fields have no single truth value
class Look:
    """What never moves: the water's colour and the bed's pattern."""
    background: np.ndarray  # [3]
    texture_seed: int


@dataclass(frozen=True)
class Body:
    shape: str
    radius: float  # radius of the circle with the same area (box units): shapes look equally big
    angle: float   # orientation of a polygon at t = 0, radians
    colour: tuple[float, float, float]
    spin: float = 0.0  # rad/s: a polygon turns about its centre at this rate


@dataclass(frozen=True)
class Screen:
    """An opaque bar across the whole box: `axis` 0 = vertical (covers x in centre +- width/2), 1 = horizontal.
    It slides sideways (its centre line moves) at `speed` box/s (0: it stands still); `centre` is where it
    is at t = 0."""
    axis: int
    centre: float
    width: float
    speed: float = 0.0


@dataclass(frozen=True, eq=False)
class Drops:
    """Ripples or dye drops: when (s, may be negative: born before the video) and where each was born."""
    births: np.ndarray   # [R]
    centres: np.ndarray  # [R, 2]


def sample_look(rng: np.random.Generator) -> Look:
    background = rng.uniform(*BACKGROUND_GREY_RANGE) + rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=3)
    return Look(background.astype(np.float32), int(rng.integers(2**31)))


def sample_drops(rng: np.random.Generator, rate: float, seconds: float, life: float) -> Drops:
    """A Poisson rain over [-life, seconds): the first frame already shows drops of every age."""
    n = int(rng.poisson(rate * (seconds + life)))
    return Drops(rng.uniform(-life, seconds, size=n), rng.uniform(0, 1, size=(n, 2)))


def _pixel_centres(size: int) -> np.ndarray:
    return ((np.arange(size) + 0.5) / size).astype(np.float32)


def _wrapped(d: np.ndarray) -> np.ndarray:
    """Offsets on the torus, into [-0.5, 0.5)."""
    return (d + 0.5) % 1.0 - 0.5


def circumradius(body: Body) -> float:
    """How far the body reaches from its centre (box units): what a screen must cover to hide it."""
    sides = SHAPE_SIDES[body.shape]
    if sides == 0:
        return body.radius
    return _polygon_geometry(sides, body.radius, 0.0)[0] / math.cos(math.pi / sides)


def _polygon_geometry(sides: int, radius: float, angle: float) -> tuple[float, np.ndarray]:
    """Apothem and outward edge normals [sides, 2] of the regular polygon with the area of a circle of `radius`."""
    apothem = radius * math.sqrt(math.pi / (sides * math.tan(math.pi / sides)))
    phis = angle + 2 * math.pi * np.arange(sides) / sides
    return apothem, np.stack([np.cos(phis), np.sin(phis)], axis=1)


def _signed_distance(body: Body, dx: np.ndarray, dy: np.ndarray, turned: np.ndarray) -> np.ndarray:
    """Signed distance (box units, < 0 inside) from the centre offsets dx, dy [F, ...]: exact for circles,
    the max of half-plane distances for polygons (exact inside and near the edges, all anti-aliasing
    needs); `turned` [F] is how far a polygon has turned from its angle in each frame."""
    sides = SHAPE_SIDES[body.shape]
    if sides == 0:
        return np.sqrt(dx * dx + dy * dy) - body.radius
    apothem, _ = _polygon_geometry(sides, body.radius, 0.0)
    phis = body.angle + turned[:, None] + 2 * math.pi * np.arange(sides)[None] / sides  # [F, sides]
    nx, ny = np.cos(phis).astype(np.float32), np.sin(phis).astype(np.float32)
    d = None
    for k in range(sides):
        proj = nx[:, k, None, None] * dx + ny[:, k, None, None] * dy
        d = proj if d is None else np.maximum(d, proj)
    return d - np.float32(apothem)


def draw_body(frames: np.ndarray, centres: np.ndarray, body: Body, times: np.ndarray | None = None) -> None:
    """Composite one body into frames [F, S, S, 3] (float32) at per-frame centres [F, 2] and `times` [F]
    (for its spin). Only a square window around it is touched; its rows and columns wrap around the frame."""
    n_frames, size = frames.shape[0], frames.shape[1]
    if n_frames == 0:
        return
    win = min(size, math.ceil(2 * circumradius(body) * size) + 3)
    start = np.floor(centres * size - win / 2).astype(np.int64)  # [F, 2] (x, y), may be negative
    offs = np.arange(win)
    cols, rows = (start[:, 0, None] + offs) % size, (start[:, 1, None] + offs) % size  # [F, win]
    coords = _pixel_centres(size)
    dx = _wrapped(coords[cols][:, None, :] - centres[:, 0, None, None].astype(np.float32))  # [F, 1, win]
    dy = _wrapped(coords[rows][:, :, None] - centres[:, 1, None, None].astype(np.float32))  # [F, win, 1]
    # coverage from the signed distance in pixels: a one-pixel linear ramp is cheap anti-aliasing
    turned = np.zeros(n_frames) if times is None else body.spin * np.asarray(times, np.float64)
    cover = np.clip(0.5 - _signed_distance(body, dx, dy, turned) * size, 0.0, 1.0)
    index = (np.arange(n_frames)[:, None, None], rows[:, :, None], cols[:, None, :])
    patch = frames[index]
    frames[index] = patch + cover[..., None] * (np.asarray(body.colour, np.float32) - patch)


def screen_cover(screen: Screen, size: int, time: float = 0.0) -> np.ndarray:
    """[S, S] coverage in [0, 1] of a screen at `time` (a one-pixel ramp at its edges, wrapping around)."""
    centre = screen.centre + screen.speed * time
    d = np.abs(_wrapped(_pixel_centres(size) - centre)) * size  # pixels from the bar's centre line
    line = np.clip(screen.width * size / 2 + 0.5 - d, 0.0, 1.0)
    return np.tile(line[None, :], (size, 1)) if screen.axis == 0 else np.tile(line[:, None], (1, size))


def draw_screens(frames: np.ndarray, screens: tuple[Screen, ...], times: np.ndarray) -> None:
    size = frames.shape[1]
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    for s in screens:
        along = i if s.axis == 0 else j  # stripes run across the bar
        look = (SCREEN_GREY - SCREEN_STRIPE * ((along // (SCREEN_STRIPE_PERIOD // 2)) % 2)).astype(np.float32)
        if s.speed == 0.0:
            cover = screen_cover(s, size)[None, :, :, None]
        else:
            cover = np.stack([screen_cover(s, size, float(t)) for t in times])[..., None]
        frames[:] = frames + cover * (look[None, :, :, None] - frames)


def ripple_state(drops: Drops, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radius [F, R] (box units) and amplitude [F, R] (grey levels) of every ring at `times`."""
    age = times[:, None] - drops.births[None, :]
    alive = age > 0
    a = np.where(alive, age, 0.0)
    amplitude = RIPPLE_AMPLITUDE * (1 - np.exp(-a / RIPPLE_RISE)) * np.exp(-a / RIPPLE_DECAY) * alive
    return RIPPLE_START_RADIUS + RIPPLE_SPEED * a, amplitude


def _nearest_images(centre: np.ndarray, size: int) -> list[np.ndarray]:
    """[S, S] distances from every pixel to each of the 3 x 3 nearest torus images of `centre`."""
    coords = _pixel_centres(size)
    return [np.sqrt((coords[None, :] - centre[0] - ox) ** 2 + (coords[:, None] - centre[1] - oy) ** 2)
            for ox, oy in itertools.product((-1.0, 0.0, 1.0), repeat=2)]


def draw_ripples(frames: np.ndarray, drops: Drops, times: np.ndarray) -> None:
    """Brightness waves: per ring the profile -z exp(-z^2 / 2) of the distance z from its front, times
    radius / distance so that the ring adds no brightness overall (odd in area too). Only frames where a
    ring is visible are computed; while a ring is smaller than half the box its nearest image is the
    only one that reaches the frame, later the 3 x 3 nearest images of its centre are summed."""
    size = frames.shape[1]
    radius_all, amplitude_all = ripple_state(drops, times)
    reach = 4 * RIPPLE_WIDTH  # beyond 4 widths from the front the profile is < 0.1% of its peak
    coords = _pixel_centres(size)
    for r, centre in enumerate(drops.centres.astype(np.float32)):
        visible = amplitude_all[:, r] > RIPPLE_VISIBLE
        if not visible.any():
            continue
        rad = radius_all[:, r]
        small = visible & (rad + reach < 0.5)
        near = np.sqrt(_wrapped(coords[None, :] - centre[0]) ** 2 + _wrapped(coords[:, None] - centre[1]) ** 2)
        for live, distances in ((np.flatnonzero(small), [near]),
                                (np.flatnonzero(visible & ~small), _nearest_images(centre, size))):
            if not len(live):
                continue
            radius = rad[live, None, None].astype(np.float32)
            amplitude = amplitude_all[live, r, None, None].astype(np.float32)
            for d in distances:
                d = np.maximum(d, 0.5 / size)[None]
                z = (d - radius) / RIPPLE_WIDTH
                frames[live] += (amplitude * -z * np.exp(-0.5 * z * z) * radius / d)[..., None]


def dye_state(drops: Drops, times: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radius [F, R] (box units) and tint [F, R] (grey levels, 0 outside its life) of every drop."""
    age = times[:, None] - drops.births[None, :]
    alive = (age > 0) & (age < DYE_LIFE)
    a = np.clip(age, 0.0, DYE_LIFE)
    envelope = np.clip(np.minimum(a, DYE_LIFE - a) / DYE_FADE, 0.0, 1.0) * alive
    radius = radii[None, :] + DYE_SPEED * a
    return radius, DYE_AMPLITUDE * envelope * radii[None, :] / radius


def draw_dye(frames: np.ndarray, drops: Drops, times: np.ndarray, tints: np.ndarray, radii: np.ndarray) -> None:
    """Soft-edged discs of tint `tints[r]` [R, 3] (wrapping around the torus: the nearest image of the centre)."""
    size = frames.shape[1]
    radius_all, tint_all = dye_state(drops, times, radii)
    for r, centre in enumerate(drops.centres.astype(np.float32)):
        live = np.flatnonzero(tint_all[:, r] > 0)
        if not len(live):
            continue
        d = np.minimum.reduce(_nearest_images(centre, size)).astype(np.float32)[None] * size  # px
        cover = np.clip(0.5 - (d - radius_all[live, r, None, None].astype(np.float32) * size) / DYE_RIM, 0.0, 1.0)
        frames[live] += (tint_all[live, r, None, None].astype(np.float32) * cover)[..., None] * tints[r]


def texture(look: Look, size: int) -> np.ndarray:
    """[S, S, 1] the static bed: a smooth periodic field (bilinear over a BED_CELLS torus grid) plus grain."""
    rng = np.random.default_rng(look.texture_seed)
    grid = rng.normal(0.0, BED_AMPLITUDE, size=(BED_CELLS, BED_CELLS))
    u = _pixel_centres(size) * BED_CELLS - 0.5  # cell coordinates of pixel centres
    i0 = np.floor(u).astype(np.int64)
    f = (u - i0).astype(np.float32)
    a, b = i0 % BED_CELLS, (i0 + 1) % BED_CELLS
    rows = grid[a] * (1 - f)[:, None] + grid[b] * f[:, None]  # [S, cells]: along y
    bed = rows[:, a] * (1 - f)[None, :] + rows[:, b] * f[None, :]  # [S, S]: then along x
    grain = rng.uniform(-TEXTURE_AMPLITUDE, TEXTURE_AMPLITUDE, size=(size, size))
    return (bed + grain).astype(np.float32)[..., None]


@dataclass(frozen=True, eq=False)
class Picture:
    """Everything one video shows: the static look, the bodies and where each is at each frame
    (`present` False: not drawn in that frame), screens, ripples and dye."""
    look: Look
    bodies: tuple[Body, ...]
    centres: np.ndarray   # [F, N, 2]
    present: np.ndarray   # [F, N] bool
    times: np.ndarray     # [F] seconds
    screens: tuple[Screen, ...] = ()
    ripples: Drops | None = None
    dye: Drops | None = None
    dye_tints: np.ndarray | None = None  # [R, 3]
    dye_radii: np.ndarray | None = None  # [R] box units


def backdrop(p: Picture, size: int) -> np.ndarray:
    """float32 [F, S, S, 3]: the water with its ripples and dye, everything behind the bodies. Members of a
    matched set share it, so it is drawn once per set."""
    frames = np.empty((len(p.times), size, size, 3), dtype=np.float32)
    frames[:] = p.look.background
    if p.ripples is not None:
        draw_ripples(frames, p.ripples, p.times)
    if p.dye is not None:
        draw_dye(frames, p.dye, p.times, p.dye_tints, p.dye_radii)
    return frames


def render(p: Picture, size: int, back: np.ndarray | None = None) -> np.ndarray:
    """uint8 frames [F, S, S, 3]; `back` is the picture's backdrop when already drawn."""
    frames = backdrop(p, size) if back is None else back.copy()
    for i, body in enumerate(p.bodies):
        shown = np.flatnonzero(p.present[:, i])
        if len(shown):
            sub = frames[shown]
            draw_body(sub, p.centres[shown, i] % 1.0, body, p.times[shown])
            frames[shown] = sub
    draw_screens(frames, p.screens, p.times)
    frames += texture(p.look, size)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def orient(frames: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """The scene turned by `turns` quarter turns and mirrored left-right: scenes are simulated in one
    canonical direction and shown in all eight."""
    if mirror:
        frames = frames[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(frames, turns, axes=(1, 2)))
