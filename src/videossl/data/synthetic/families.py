"""Scene families: the kinds of video the world makes, each from one seed.

A family is *natural* when every video it makes is physically possible (it may be pretrained on), and
a *probe* family when it builds the benchmark's questions: matched sets of physically possible and
impossible segments, counterfactual futures, a process the pretraining pool never shows. Probe
families never enter the pretraining pool (config.PoolWorldConfig checks it), so no objective can
train on what their labels say.

Natural families:
- bounce: 1..max_objects objects of one shape bouncing under gravity (physics.arcs), ripples,
  a screen now and then. Labels: gravity (4 directions), object count, shape, ripple travel per frame.
- glide: discs gliding without gravity and colliding elastically, 0-2 screens (standing, or in half the
  scenes sliding across the box), ripples.
- launch: one object glides into another at rest, head-on: equal masses swap velocities, the
  struck one moves off and the striker stops (Michotte's launching).

Probe families (matched sets, stored one set to a file, each member a segment of `segment` frames
at a known start; every member of a set shares the scene: look, ripples, distractors). In the screen
sets a body glides behind a screen, and what tells possible from impossible is only how the parts seen
before and after the screen fit its motion: every coarser cue (when it is seen, how long it is hidden,
its speed, how what is seen before compares with what is seen after) occurs equally in both groups.
- permanence: a 2 x 2 of screen width x speed, all coming out at the same frame: narrow screen with a
  slow glide and wide screen with a fast glide are possible; narrow with fast (it lingers behind the
  screen) and wide with slow (it comes out too soon, having skipped part of its path) are not. Every
  width, speed and timing occurs once in each group.
- continuity: a body glides diagonally through a narrow screen; the other possible member is the
  parallel path a few pixels to the side. Spliced at a frame where the body is hidden in both, the
  impossible members come out off their path (a jump sideways while hidden); every frame and frame
  pair of an impossible member is a possible member's. The paths are diagonal, so every member comes
  out at another height than it went in: only "on the line it was moving along" tells them apart.
- shape_constancy: a spinning triangle and the same spin as a square, spliced where hidden: the
  impossible members change shape behind the screen (frames and frame pairs match). The spin changes
  how the body looks from frame to frame in every member.
- future: a context of `switch` frames under gravity, then continuations re-simulated from the same
  state (positions and velocities at the switch) under gravity turned a quarter turn either way or
  reversed: each is a flight under a gravity of the world's strength, velocity is continuous at the
  switch, only the acceleration changes. A screen slides across the scene. A control member
  re-simulates the true future with a different draw of something unobservable (the shelf height
  below the clip): the same frames.
- causality: one object glides up to another at rest and stops; the other moves off at its speed.
  contact: it stops touching the other (a launch); gap: it stops short, and the other moves off
  anyway (motion without contact). Same motions, same timing; only the contact differs.
- dye: a gliding object and dye drops that land, spread and bleach (render.py): a process no pool
  video shows. Arrow of time on it asks whether a sense of time's direction carries over.
- reversible: gliding objects colliding elastically and nothing else: every video is as plausible
  backwards, so arrow of time must be at chance for every model (the benchmark's control).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from videossl.data.synthetic import physics as P
from videossl.data.synthetic import render as R

# --- shared scene parameters (box units, seconds) ------------------------------------------------
OBJECT_RADIUS_RANGE = (0.09, 0.12)  # equal-area radius: 3-4 px at 32 px
ARC_PERIOD_RANGE = (0.7, 1.0)       # s between bounces: arcs 0.2-0.4 box high, one or two bounces a clip
DRIFT_RANGE = 0.3                   # box/s across gravity: about what falling moves on average in a clip
RIPPLE_RATE = 1.5                   # raindrops per second over the whole box: 2-4 rings in view
DYE_RATE = 2.0                      # dye drops per second: about two in view (each lives render.DYE_LIFE)
GLIDE_SPEED_RANGE = (0.2, 1.2)      # box/s: up to 5 px a frame, as fast as the probe sets move
SCREEN_CHANCE = 0.5                 # share of bounce scenes with a screen
SCREEN_WIDTH_RANGE = (0.15, 0.3)    # box units, natural scenes' screens
# Sliding screens (glide scenes, half of them; the future sets) cross the box at this speed (box/s):
# occluders in motion, and a large moving pattern that a single global motion estimate follows instead
# of the bodies. Measured on bounce scenes: it takes motion statistics on gravity from 0.52 to 0.34-0.42,
# but the supervised ceiling too, from 0.96 to 0.56-0.83, so bounce scenes keep still screens.
SCREEN_SPEED_RANGE = (0.2, 0.6)
FUTURE_SPEED_ALONG = 0.8            # box/s: velocity along gravity at the switch, uniform in +- this
CAUSAL_GAP = 0.08                   # box units (2.6 px at 32): how short of the other the striker stops
CAUSAL_SPEED_RANGE = (0.45, 0.7)    # box/s


@dataclass(frozen=True)
class Made:
    frames: np.ndarray  # uint8 [F, S, S, 3]
    labels: dict


@dataclass(frozen=True)
class Canvas:
    """What every video of a world shares: frame size, rate, length, and the set segment (one clip)."""
    size: int
    fps: int
    seconds: float
    segment: int
    max_objects: int

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))


@dataclass(frozen=True)
class Family:
    name: str
    natural: bool
    make: Callable[..., Made]   # (rng, canvas, design) -> Made
    # the benchmark's balanced design: one tuple per cell (the values `make` is given as `design`)
    cells: Callable[[int], list[tuple]] = lambda max_objects: [()]


def _times(n: int, fps: float) -> np.ndarray:
    return np.arange(n) / fps


def _bodies(rng: np.random.Generator, n: int, shape: str | None = None, radius: float | None = None) -> list[R.Body]:
    """n bodies of one shape, each its own palette colour, size and orientation."""
    shape = shape or R.SHAPES[int(rng.integers(len(R.SHAPES)))]
    colours = R.PALETTE[rng.permutation(len(R.PALETTE))[:n]]
    return [R.Body(shape, float(radius if radius is not None else rng.uniform(*OBJECT_RADIUS_RANGE)),
                   float(rng.uniform(0, 2 * np.pi)), tuple(map(float, col))) for col in colours]


def _screens(rng: np.random.Generator, n: int, sliding: bool = False) -> tuple[R.Screen, ...]:
    """n screens across the box; `sliding` ones move sideways (across the box) at SCREEN_SPEED_RANGE."""
    return tuple(R.Screen(int(rng.integers(2)), float(rng.uniform(0, 1)), float(rng.uniform(*SCREEN_WIDTH_RANGE)),
                          float(rng.choice([-1.0, 1.0]) * rng.uniform(*SCREEN_SPEED_RANGE)) if sliding else 0.0)
                 for _ in range(n))


def _spread(rng: np.random.Generator, radii: list[float]) -> np.ndarray:
    """Centres [N, 2] that do not overlap (rejection sampling on the torus)."""
    while True:
        pos = rng.uniform(0, 1, size=(len(radii), 2))
        if all(np.hypot(*((pos[j] - pos[i] + 0.5) % 1 - 0.5)) > radii[i] + radii[j] + 0.02
               for i in range(len(radii)) for j in range(i + 1, len(radii))):
            return pos


def _unit(phi: float) -> np.ndarray:
    return np.array([math.cos(phi), math.sin(phi)])


def ripple_travel(ripples: R.Drops, times: np.ndarray, size: int, fps: float) -> np.ndarray:
    """[F] ripple wavefront travel to the next frame (grey levels x pixels): how much irreversible change
    each frame step shows. A clip with little of it cannot show its direction."""
    _, amplitude = R.ripple_state(ripples, times)
    return amplitude.sum(1) * R.RIPPLE_SPEED / fps * size


# --- natural families ----------------------------------------------------------------------------


def make_bounce(rng, c: Canvas, design=()) -> Made:
    gravity, n, shape = design or (int(rng.integers(4)), int(rng.integers(1, c.max_objects + 1)), int(rng.integers(3)))
    bodies = _bodies(rng, n, R.SHAPES[shape])
    times = _times(c.frames, c.fps)
    g = P.GRAVITY_DIRECTIONS[gravity]
    centres = np.stack([P.arcs(times, rng.uniform(0, 1, 2), g, float(rng.uniform(*ARC_PERIOD_RANGE)),
                               float(rng.uniform(0, 10)), float(rng.uniform(-DRIFT_RANGE, DRIFT_RANGE)))
                        for _ in bodies], axis=1)
    screens = _screens(rng, int(rng.random() < SCREEN_CHANCE))
    ripples = R.sample_drops(rng, RIPPLE_RATE, c.seconds, R.RIPPLE_LIFE)
    picture = R.Picture(R.sample_look(rng), tuple(bodies), centres, np.ones(centres.shape[:2], bool), times,
                        screens, ripples)
    labels = {"gravity": gravity, "gravity_name": P.GRAVITY_NAMES[gravity], "n_objects": n,
              "shape": R.SHAPES[shape], "screens": len(screens),
              "irreversibility": np.round(ripple_travel(ripples, times, c.size, c.fps), 2).tolist()}
    return Made(R.render(picture, c.size), labels)


def _glide_scene(rng, c: Canvas, n_screens: int, ripples: bool, dye: bool,
                 n: int | None = None) -> tuple[R.Picture, dict]:
    n = n or int(rng.integers(1, c.max_objects + 1))
    bodies = _bodies(rng, n, "circle")  # collisions are between discs: only a disc looks like what touches
    times = _times(c.frames, c.fps)
    pos0 = _spread(rng, [b.radius for b in bodies])
    vel0 = np.stack([_unit(phi) for phi in rng.uniform(0, 2 * np.pi, n)]) * rng.uniform(*GLIDE_SPEED_RANGE, size=(n, 1))
    centres, _ = P.glide(times, pos0, vel0, np.array([b.radius for b in bodies]), c.fps)
    drops = R.sample_drops(rng, DYE_RATE, c.seconds, R.DYE_LIFE) if dye else None
    picture = R.Picture(R.sample_look(rng), tuple(bodies), centres, np.ones(centres.shape[:2], bool), times,
                        _screens(rng, n_screens, sliding=n_screens > 0 and bool(rng.integers(2))),
                        R.sample_drops(rng, RIPPLE_RATE, c.seconds, R.RIPPLE_LIFE) if ripples else None,
                        drops, R.DYE_TINTS[rng.integers(len(R.DYE_TINTS), size=len(drops.births))] if dye else None,
                        rng.uniform(*R.DYE_RADIUS_RANGE, size=len(drops.births)) if dye else None)
    return picture, {"n_objects": n, "shape": bodies[0].shape, "screens": n_screens}


def make_glide(rng, c: Canvas, design=()) -> Made:
    picture, labels = _glide_scene(rng, c, int(rng.integers(3)), ripples=True, dye=False)
    return Made(R.render(picture, c.size), labels)


def make_launch(rng, c: Canvas, design=()) -> Made:
    """A striker aimed at a body at rest (equal sizes: equal masses), plus ripples; simulated with the
    same elastic collisions as gliding, so the launch is what physics gives, off-centre hits included."""
    bodies = _bodies(rng, 2, "circle", float(rng.uniform(*OBJECT_RADIUS_RANGE)))
    times = _times(c.frames, c.fps)
    target, direction = rng.uniform(0, 1, 2), _unit(rng.uniform(0, 2 * np.pi))
    speed = rng.uniform(*CAUSAL_SPEED_RANGE)
    hit = float(rng.uniform(0.5, max(0.6, c.seconds - 1.0)))  # when it would reach the target's centre
    aim = rng.uniform(-0.8, 0.8) * bodies[0].radius * P.perpendicular(direction)
    start = target + aim - direction * speed * hit
    centres, _ = P.glide(times, np.stack([start, target]), np.stack([direction * speed, np.zeros(2)]),
                         np.array([b.radius for b in bodies]), c.fps)
    picture = R.Picture(R.sample_look(rng), tuple(bodies), centres, np.ones(centres.shape[:2], bool), times,
                        (), R.sample_drops(rng, RIPPLE_RATE, c.seconds, R.RIPPLE_LIFE))
    return Made(R.render(picture, c.size), {"n_objects": 2, "shape": bodies[0].shape})


# --- probe families: matched sets ----------------------------------------------------------------


def _set_file(members: list[tuple[str, int, np.ndarray]], rng: np.random.Generator, c: Canvas, extra: dict,
              orientation: tuple[int, bool] | None = None) -> Made:
    """One file of a set: its members' segments (turned and mirrored alike), in a random order (where a
    member sits in the file says nothing about it)."""
    if orientation is not None:
        members = [(m, p, R.orient(f, *orientation)) for m, p, f in members]
    order = rng.permutation(len(members))
    frames = np.concatenate([members[i][2] for i in order])
    segments = [{"start": j * c.segment, "member": members[i][0], "possible": members[i][1]} for j, i in enumerate(order)]
    return Made(frames, {**extra, "segments": segments})


def _orientation(rng: np.random.Generator) -> tuple[int, bool]:
    return int(rng.integers(4)), bool(rng.integers(2))


def _splice(a: np.ndarray, b: np.ndarray, switch: int) -> np.ndarray:
    return np.concatenate([a[:switch], b[switch:]])


def _switch(rng: np.random.Generator, c: Canvas) -> int:
    """The frame at which matched members are spliced: the middle of the segment (3 or 4 of 8)."""
    return int(rng.integers(c.segment // 2 - 1, c.segment // 2 + 1))


# --- screen sets: a body glides behind a screen ----------------------------------------------------
CROSS_RADIUS = 0.07               # circles of 2.2 px radius at 32 px: room for a few frames either side of a screen
CROSS_MARGIN = 0.75               # px the screen's edge must clear a hidden body by (its own ramp is 1 px)
CROSS_SPEED_RANGE = (2.5, 4.0)    # px per frame along the crossing (0.6-1.0 box/s at 32 px and 8 fps)
PERMANENCE_DELAY_RANGE = (2.5, 3.5)  # frames from the leading edge touching the screen to it coming out
PERMANENCE_SLACK_RANGE = (1.15, 1.5)  # the narrow screen's width over the least that hides the body whole
PERMANENCE_RATIO_RANGE = (1.6, 2.0)  # wide over narrow screen = fast over slow glide
PERMANENCE_MAX_SPEED = 4.8           # px per frame (1.2 box/s at 32 px and 8 fps): the fast glide's cap
CONTINUITY_SIDE_SPEED = (1.5, 2.5)  # px per frame across the crossing: the paths are diagonal
CONTINUITY_OFFSET_RANGE = (3.0, 5.0)  # px between the two parallel paths
CONTINUITY_SLACK = (0.0, 0.5)     # px: a narrow screen, so the jump is close to where it went in
SHAPE_RADIUS = 0.12               # equal-area radius of the shape sets' bodies (3.8 px at 32 px)
SHAPE_SPIN_RANGE = (2.0, 4.0)     # rad/s, either way: the body turns 100-200 degrees in a clip
SHAPE_SPEED_RANGE = (3.5, 4.5)    # px per frame: a triangle that big needs a wide screen and room either side


def _pass_scene(rng, c: Canvas, body: R.Body, tracks: list[np.ndarray], screens: list[R.Screen],
                shown: list[np.ndarray] | None = None) -> list[R.Picture]:
    """Pictures of `body` on each track [F, 2] behind its screen (drawn where `shown` [F], default always),
    sharing everything else: the look, ripples and, half the time, another body gliding along x in the
    other half of the box (it never meets the first; it passes behind the screen, as it would)."""
    y = float(tracks[0][0, 1])
    bodies, extra = [body], []
    if rng.random() < 0.5:
        bodies.append(_bodies(rng, 1)[0])
        x0, v = rng.uniform(0, 1), rng.choice([-1.0, 1.0]) * rng.uniform(*GLIDE_SPEED_RANGE) / c.fps
        extra = [np.stack([x0 + v * np.arange(c.segment), np.full(c.segment, y + 0.5)], 1)]
    look, ripples = R.sample_look(rng), R.sample_drops(rng, RIPPLE_RATE, c.segment / c.fps, R.RIPPLE_LIFE)
    shown = shown or [np.ones(c.segment, bool)] * len(tracks)
    return [R.Picture(look, tuple(bodies), np.stack([t] + extra, 1),
                      np.stack([d] + [np.ones(c.segment, bool)] * len(extra), 1), _times(c.segment, c.fps),
                      (screen,), ripples) for t, screen, d in zip(tracks, screens, shown)]


def _spliced_pair(c: Canvas, pictures: list[R.Picture], switch: int, names: tuple[str, str, str, str]) -> list:
    """Both pictures (possible) and the two splices at the switch frame (impossible); the body must be
    hidden whole at the switch in both, so that frame is the same picture in all four."""
    back = R.backdrop(pictures[0], c.size)
    a, b = (R.render(p, c.size, back) for p in pictures)
    return [(names[0], 1, a), (names[1], 1, b), (names[2], 0, _splice(a, b, switch)),
            (names[3], 0, _splice(b, a, switch))]


def _glide_through(rng, c: Canvas, switch: int, speed: float, side: float = 0.0) -> tuple[np.ndarray, float, float]:
    """A track [F, 2] gliding along +x at `speed` (and `side` along y; box per frame) whose centre is at a
    random screen position x at the switch frame; returns the track, that x and the track's row there."""
    y, x_screen = rng.uniform(0, 1), rng.uniform(0, 1)
    steps = np.arange(c.segment) - switch
    return np.stack([x_screen + speed * steps, y + side * steps], 1), x_screen, y


def _crossing_track(speed: float, width: float, touch: float, late: float, x_screen: float, frames: int,
                    margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre x [F] and whether the body is drawn [F] for a body of radius CROSS_RADIUS gliding along +x
    through a screen of `width` at x_screen (box units, frames): its leading edge touches the near edge at
    `touch`, and it comes out of the far side `late` frames later than a straight glide would. It is
    drawn on the glide until it is hidden whole, on the glide shifted by `late` once it starts to come
    out, and not at all in between (it is behind the screen)."""
    t = np.arange(frames, dtype=np.float64)
    hidden_from = touch + (2 * CROSS_RADIUS + margin) / speed  # trailing edge past the near edge
    out_from = touch + late + (width - margin) / speed         # leading edge reaches the far edge
    x = x_screen - width / 2 - CROSS_RADIUS + speed * (t - touch - np.where(t < hidden_from, 0.0, late))
    return x, (t < hidden_from) | (t >= out_from)


def make_permanence(rng, c: Canvas, design=()) -> Made:
    """A balanced 2 x 2 of screen width x speed that all come out at the same frame: the narrow screen with
    the slow glide and the wide one with the fast glide are possible; the narrow one with the fast glide
    (it lingers behind the screen) and the wide one with the slow glide (it comes out too soon: it
    skipped part of its path) are not. Every width, speed and timing (when it goes in, when it comes
    out) occurs once in each group, so none of them, nor the pattern of when the body is seen, tells the
    groups apart: only how they fit together does. (Measured: splicing one glide with the same glide
    1-2 frames behind keeps frames equal, but the time hidden is then longer or shorter only in the
    impossible members, and motion statistics read it at 0.8.)"""
    body = _bodies(rng, 1, "circle", CROSS_RADIUS)[0]
    margin = CROSS_MARGIN / c.size
    least = 2 * CROSS_RADIUS + 2 * margin  # the narrowest screen that hides the body whole
    while True:
        delay = rng.uniform(*PERMANENCE_DELAY_RANGE)  # frames from touching the screen to coming out
        narrow = least * rng.uniform(*PERMANENCE_SLACK_RANGE)
        wide = narrow * rng.uniform(*PERMANENCE_RATIO_RANGE)
        if wide / delay <= PERMANENCE_MAX_SPEED / c.size:
            break
    slow, fast = narrow / delay, wide / delay
    touch = rng.uniform(1.0, c.segment - 1.5 - delay)
    y, x_screen = rng.uniform(0, 1), rng.uniform(0, 1)
    members = [("narrow_slow", 1, slow, narrow), ("wide_fast", 1, fast, wide),
               ("narrow_fast", 0, fast, narrow), ("wide_slow", 0, slow, wide)]
    tracks, screens, shown = [], [], []
    for _, _, speed, width in members:
        x, drawn = _crossing_track(speed, width, touch, delay - width / speed, x_screen, c.segment, margin)
        tracks.append(np.stack([x, np.full(c.segment, y)], 1))
        screens.append(R.Screen(0, x_screen, width))
        shown.append(drawn)
    pictures = _pass_scene(rng, c, body, tracks, screens, shown)
    back = R.backdrop(pictures[0], c.size)  # the screens are drawn over the backdrop: it is the same for all
    frames = [(name, possible, R.render(p, c.size, back)) for (name, possible, _, _), p in zip(members, pictures)]
    return _set_file(frames, rng, c, {"delay": round(delay, 3)}, _orientation(rng))


def make_continuity(rng, c: Canvas, design=()) -> Made:
    """A body glides diagonally through a narrow screen; the other possible member takes the parallel
    path `offset` to the side. Spliced, the impossible members come out beside the path they went in on.
    Every member comes out at another height than it went in (the paths are diagonal), by amounts that
    differ by +- offset between the groups: not whether, only where relative to its line tells them apart."""
    body = _bodies(rng, 1, "circle", CROSS_RADIUS)[0]
    switch = _switch(rng, c)
    speed = rng.uniform(*CROSS_SPEED_RANGE) / c.size
    side = rng.choice([-1.0, 1.0]) * rng.uniform(*CONTINUITY_SIDE_SPEED) / c.size
    offset = rng.uniform(*CONTINUITY_OFFSET_RANGE) / c.size
    path, x_screen, _ = _glide_through(rng, c, switch, speed, side)
    width = 2 * CROSS_RADIUS + (2 * CROSS_MARGIN + rng.uniform(*CONTINUITY_SLACK)) / c.size
    screen = R.Screen(0, x_screen, width)
    pictures = _pass_scene(rng, c, body, [path, path + np.array([0.0, offset])], [screen, screen])
    members = _spliced_pair(c, pictures, switch, ("path", "parallel_path", "jumps_aside", "jumps_back"))
    return _set_file(members, rng, c, {"switch": switch, "offset_px": round(offset * c.size, 2)}, _orientation(rng))


def make_shape_constancy(rng, c: Canvas, design=()) -> Made:
    """A spinning triangle and the same spin as a square glide through a screen; spliced where hidden, the
    impossible members change shape behind it. The spin changes how the body looks from frame to frame
    in every member (measured: without it a random video network's linear probe reads "looks the same
    before and after" at 0.70), so only the shape, not the picture, stays the same in the possible ones."""
    first, second = (("triangle", "square"), ("square", "triangle"))[int(rng.integers(2))]
    spin = float(rng.choice([-1.0, 1.0]) * rng.uniform(*SHAPE_SPIN_RANGE))
    colour = tuple(map(float, R.PALETTE[int(rng.integers(len(R.PALETTE)))]))
    angle = float(rng.uniform(0, 2 * np.pi))
    a_body, b_body = (R.Body(shape, SHAPE_RADIUS, angle, colour, spin) for shape in (first, second))
    reach = max(R.circumradius(a_body), R.circumradius(b_body))  # the screen hides the wider one whole
    switch = _switch(rng, c)
    track, x_screen, _ = _glide_through(rng, c, switch, rng.uniform(*SHAPE_SPEED_RANGE) / c.size)
    screen = R.Screen(0, x_screen, 2 * reach + 2 * CROSS_MARGIN / c.size)
    pictures = [replace(p, bodies=(body,) + p.bodies[1:])
                for p, body in zip(_pass_scene(rng, c, a_body, [track, track], [screen, screen]), (a_body, b_body))]
    members = _spliced_pair(c, pictures, switch, (f"stays_{first}", f"stays_{second}", f"turns_{second}",
                                                  f"turns_{first}"))
    return _set_file(members, rng, c, {"switch": switch, "shapes": [first, second]}, _orientation(rng))


FUTURE_MEMBERS = ("true", "turned_left", "turned_right", "reversed_gravity", "control")
FUTURE_TURNS = {"turned_left": 1, "turned_right": -1, "reversed_gravity": 2}  # quarter turns of gravity at the switch


def _turn(u: np.ndarray, quarters: int) -> np.ndarray:
    """The image-coordinate direction u turned by `quarters` quarter turns."""
    for _ in range(quarters % 4):
        u = P.perpendicular(u)
    return u


def make_future(rng, c: Canvas, design=()) -> Made:
    """Bodies in free flight under gravity (a stretch of an arc between bounces); at the switch frame the
    state (positions and velocities) is re-simulated under gravity turned a quarter turn either way or
    reversed. Each continuation is a flight under a gravity of the world's strength; only its fit to the
    context is wrong. Velocity is continuous at the switch in every member: only the acceleration changes."""
    gravity = int(rng.integers(4))
    u = P.GRAVITY_DIRECTIONS[gravity]
    n = int(rng.integers(1, 3))
    bodies = _bodies(rng, n)
    switch = c.segment // 2
    times = _times(c.segment, c.fps)
    after = times[switch:] - times[switch]
    v = (rng.uniform(-FUTURE_SPEED_ALONG, FUTURE_SPEED_ALONG, (n, 1)) * u
         + rng.uniform(-DRIFT_RANGE, DRIFT_RANGE, (n, 1)) * P.perpendicular(u))
    x = _spread(rng, [b.radius for b in bodies])
    past = P.free_flight(times - times[switch], x, v, u * P.GRAVITY)  # the true flight through the whole segment
    futures = {"true": past[switch:], "control": P.free_flight(after, x, v, u * P.GRAVITY)}
    futures.update({name: P.free_flight(after, x, v, _turn(u, q) * P.GRAVITY) for name, q in FUTURE_TURNS.items()})
    look, ripples = R.sample_look(rng), R.sample_drops(rng, RIPPLE_RATE, c.segment / c.fps, R.RIPPLE_LIFE)
    screens = _screens(rng, 1, sliding=True)  # the global motion estimate follows it (see SCREEN_SPEED_RANGE)
    members, back = [], None
    for name in FUTURE_MEMBERS:
        centres = np.concatenate([past[:switch], futures[name]])
        picture = R.Picture(look, tuple(bodies), centres, np.ones((c.segment, n), bool), times, screens, ripples)
        back = R.backdrop(picture, c.size) if back is None else back
        members.append((name, int(name in ("true", "control")), R.render(picture, c.size, back)))
    return _set_file(members, rng, c, {"switch": switch, "gravity": gravity, "n_objects": n})


def make_causality(rng, c: Canvas, design=()) -> Made:
    radius = float(rng.uniform(*OBJECT_RADIUS_RANGE))
    bodies = _bodies(rng, 2, "circle", radius)  # discs: touching is exactly two radii apart
    speed = float(rng.uniform(*CAUSAL_SPEED_RANGE)) / c.fps  # box per frame
    switch = int(rng.integers(c.segment // 2 - 1, c.segment // 2 + 2))  # the frame the struck body starts moving
    y, x_target = rng.uniform(0, 1), rng.uniform(0, 1)
    steps = np.arange(c.segment) - switch
    target = np.stack([x_target + speed * np.maximum(steps, 0), np.full(c.segment, y)], 1)
    look, ripples = R.sample_look(rng), R.sample_drops(rng, RIPPLE_RATE, c.segment / c.fps, R.RIPPLE_LIFE)
    members, back = [], None
    for name, stop in (("contact", 2 * radius), ("gap", 2 * radius + CAUSAL_GAP)):
        striker = np.stack([x_target - stop + speed * np.minimum(steps, 0), np.full(c.segment, y)], 1)
        picture = R.Picture(look, tuple(bodies), np.stack([striker, target], 1), np.ones((c.segment, 2), bool),
                            _times(c.segment, c.fps), (), ripples)
        back = R.backdrop(picture, c.size) if back is None else back
        members.append((name, int(name == "contact"), R.render(picture, c.size, back)))
    return _set_file(members, rng, c, {"switch": switch}, _orientation(rng))


def make_dye(rng, c: Canvas, design=()) -> Made:
    # one gliding object (measured: with 1-3 the supervised ceiling learns the dye's arrow in 300 steps only
    # now and then; the spreading is what the task is about, the objects only keep the scene a scene)
    picture, labels = _glide_scene(rng, c, 0, ripples=False, dye=True, n=1)
    radius, tint = R.dye_state(picture.dye, picture.times, picture.dye_radii)
    radius_next, _ = R.dye_state(picture.dye, picture.times + 1.0 / c.fps, picture.dye_radii)
    # how much spreading each frame step shows: tint x growth of the disc's radius (grey levels x pixels)
    spread = (tint * (radius_next - radius)).sum(1) * c.size
    return Made(R.render(picture, c.size), {**labels, "irreversibility": np.round(spread, 2).tolist()})


def make_reversible(rng, c: Canvas, design=()) -> Made:
    picture, labels = _glide_scene(rng, c, 0, ripples=False, dye=False)
    return Made(R.render(picture, c.size), labels)


FAMILIES = {f.name: f for f in (
    Family("bounce", True, make_bounce, lambda max_objects: [(g, n, s) for g in range(4)
                                                             for n in range(1, max_objects + 1) for s in range(3)]),
    Family("glide", True, make_glide),
    Family("launch", True, make_launch),
    Family("permanence", False, make_permanence),
    Family("continuity", False, make_continuity),
    Family("shape_constancy", False, make_shape_constancy),
    Family("future", False, make_future),
    Family("causality", False, make_causality),
    Family("dye", False, make_dye),
    Family("reversible", False, make_reversible),
)}
NATURAL = tuple(n for n, f in FAMILIES.items() if f.natural)
