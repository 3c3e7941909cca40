"""How things move in the world (box units, seconds; the box is a torus).

- **Bouncing under gravity.** Gravity pulls every object along one of four directions with the same
  acceleration. Each object bounces elastically on an invisible shelf of its own (any height: the
  torus has no floor), so its path is a chain of identical symmetric arcs: along gravity its velocity
  is a sawtooth that ramps up (falling) and flips at each bounce; across gravity it drifts at a
  constant speed. Over a whole arc the object returns to the same height, so its mean displacement
  says nothing about gravity (a drift detector is at chance); the acceleration does. An elastic
  bounce is time-reversible: played backwards, the arcs are arcs under the same gravity, so the
  gravity label survives time reversal.
- **Gliding.** Without gravity objects move at constant velocity and collide elastically (discs,
  mass proportional to area): momentum and energy are conserved, so gliding is reversible too.
- **Free flight.** Position and velocity at one instant and a gravity give the rest (x + v t + g t^2 / 2):
  the choosing-the-future sets re-simulate one state under other laws with it.
"""
from __future__ import annotations

import numpy as np

GRAVITY_NAMES = ("down", "up", "left", "right")  # label index = position
# Unit vectors in image coordinates (y points down), in GRAVITY_NAMES order.
GRAVITY_DIRECTIONS = np.array([[0.0, 1.0], [0.0, -1.0], [-1.0, 0.0], [1.0, 0.0]])
# box/s^2: an arc of 1 s rises 0.4 box and lands at 1.6 box/s; a clip (7 frame steps) bends a path by up to
# 0.15 box (5 px at 32 px). Measured: at half this the supervised ceiling learns gravity far more slowly.
GRAVITY = 3.2
SUBSTEPS = 8           # collision sub-steps per frame (a front moves < 0.5 px per sub-step at 32 px)


def perpendicular(u: np.ndarray) -> np.ndarray:
    return np.array([-u[1], u[0]])


def arcs(times: np.ndarray, base: np.ndarray, gravity: np.ndarray, period: float, phase: float,
         drift: float) -> np.ndarray:
    """[F, 2] centres of a body bouncing on its own shelf: along the unit vector `gravity` it falls
    from the apex and rebounds every `period` seconds (time since the last bounce: (t + phase) mod
    period); across gravity it drifts at `drift` box/s. `base` is where it touches the shelf at t = 0
    minus the arc's part of the motion."""
    tau = np.mod(times + phase, period)
    along = 0.5 * GRAVITY * (tau * tau - period * tau)  # 0 at a bounce, -g P^2 / 8 at the apex
    return base[None] + along[:, None] * gravity[None] + (drift * times)[:, None] * perpendicular(gravity)[None]


def free_flight(times: np.ndarray, pos: np.ndarray, vel: np.ndarray, accel: np.ndarray) -> np.ndarray:
    """[F, N, 2] positions of bodies in free flight from pos [N, 2], vel [N, 2] at t = 0 under accel [2]."""
    t = times[:, None, None]
    return pos[None] + vel[None] * t + 0.5 * accel[None, None] * t * t


def glide(times: np.ndarray, pos0: np.ndarray, vel0: np.ndarray, radii: np.ndarray,
          fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Constant velocity with elastic collisions between discs of mass ~ radius^2, on the torus.
    Returns positions and velocities [F, N, 2] at `times` (which start at 0 and step by 1 / fps)."""
    n_frames, n = len(times), len(radii)
    dt = 1.0 / (fps * SUBSTEPS)
    mass = radii ** 2
    x, v = pos0.astype(np.float64).copy(), vel0.astype(np.float64).copy()
    pos, vel = np.empty((n_frames, n, 2)), np.empty((n_frames, n, 2))
    for f in range(n_frames):
        pos[f], vel[f] = x, v
        for _ in range(SUBSTEPS):
            x = x + v * dt
            collide(x, v, radii, mass)
    return pos % 1.0, vel


def collide(x: np.ndarray, v: np.ndarray, radii: np.ndarray, mass: np.ndarray) -> None:
    """Elastic impulses (in place) between every pair of discs that overlap and approach each other."""
    n = len(radii)
    if n < 2:
        return
    offsets = (x[None, :] - x[:, None] + 0.5) % 1.0 - 0.5  # [i, j]: wrapped offset from i to j
    touching = np.hypot(offsets[..., 0], offsets[..., 1]) < radii[:, None] + radii[None, :]
    for i, j in zip(*np.nonzero(np.triu(touching, 1))):  # rarely any: one vectorised check per sub-step
        d = (x[j] - x[i] + 0.5) % 1.0 - 0.5
        dist = float(np.hypot(*d))
        if dist == 0.0:
            continue
        normal = d / dist
        closing = float((v[i] - v[j]) @ normal)
        if closing <= 0:  # already separating
            continue
        impulse = 2 * closing / (1 / mass[i] + 1 / mass[j])
        v[i] -= impulse / mass[i] * normal
        v[j] += impulse / mass[j] * normal
