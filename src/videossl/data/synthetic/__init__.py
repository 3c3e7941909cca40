"""The built-in synthetic world: short videos whose labels only a model of time and physics can give.

A box seen face-on, wrapped around at its edges (a torus: what leaves one side comes back on the
other), with no floor, wall or corner, over a static textured bed. Objects bounce under gravity on
invisible shelves or glide and collide; screens hide what passes behind them; ripples spread from
raindrops. physics.py says how things move, render.py how they look, families.py what kinds of
video (scene families) the world makes.

Two worlds are drawn from these physics, each a number of videos per scene family:
- the **benchmark** (the evaluation world; eval/tasks.py asks its questions): natural scenes and the
  probe families' matched sets, split train/val/test inside each design cell;
- the **pool** (the pretraining world, its own seed, never evaluated on): natural families only.

Videos are written as real H.264 files plus a JSON label sidecar, so they take the same decode path
(decord / PyAV) as real footage. A probe family's file holds one matched set, its members one after
another as segments of `segment` frames (one clip each); the sidecar says which is which.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from videossl.data.encode import write_video
from videossl.data.synthetic.families import FAMILIES, NATURAL, Canvas, Made
from videossl.data.synthetic.physics import GRAVITY_DIRECTIONS, GRAVITY_NAMES
from videossl.data.synthetic.render import SHAPES
from videossl.storage import write_text_atomic

if TYPE_CHECKING:  # config validates families against this package: no import cycle at run time
    from videossl.config import SyntheticConfig

__all__ = ["FAMILIES", "NATURAL", "GRAVITY_DIRECTIONS", "GRAVITY_NAMES", "SHAPES", "WORLDS", "SPLIT_NAMES",
           "GENERATOR_VERSION", "Unit", "plan", "make_unit", "render_video", "generate"]

WORLDS = ("benchmark", "pool")
SPLIT_NAMES = ("train", "val", "test")

# Bump whenever the world or the renderer changes: it is part of the labels, so cached videos from an
# older generator never pass the "same labels" check in generate().
GENERATOR_VERSION = 6  # 4: a torus pond of sinking objects; 5: bouncing, gliding, screens, probe families; 6: their
# held-out constructions (no presence or drift shortcut), stronger gravity, fainter ripples, spreading dye discs


@dataclass(frozen=True)
class Unit:
    """One video to make: its family, index within the family, seed, design cell and split."""
    family: str
    index: int
    seed: int
    design: tuple
    split: str

    @property
    def name(self) -> str:
        return f"{self.family}/{self.index:05d}"


def canvas(cfg: SyntheticConfig, segment: int) -> Canvas:
    return Canvas(cfg.size, cfg.fps, cfg.seconds, segment, cfg.max_objects)


def unit_seed(base_seed: int, family: str, index: int) -> int:
    """Independent, reproducible seed of video `index` of `family` (SeedSequence mixes the numbers)."""
    entropy = [base_seed & 0xFFFFFFFFFFFFFFFF, zlib.crc32(family.encode()), index]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def benchmark_units(cfg: SyntheticConfig, family: str, count: int) -> list[Unit]:
    """A balanced design: every cell of the family gets the same number of videos (cells take turns),
    and each cell's videos are split train/val/test in the configured proportions, so every split sees
    every label equally often (no label-prior shift)."""
    b = cfg.benchmark
    cells = FAMILIES[family].cells(cfg.max_objects)
    rng = np.random.default_rng([b.seed, 2, zlib.crc32(family.encode())])
    order = rng.permutation(len(cells))
    members: dict[int, list[int]] = {c: [] for c in range(len(cells))}
    for i in range(count):
        members[int(order[i % len(cells)])].append(i)
    edges = np.cumsum([b.splits[s] for s in SPLIT_NAMES])
    split_of: dict[int, str] = {}
    for videos in members.values():
        # position k of m in a cell -> the split whose share of the cell covers (k + 0.5) / m
        for k, i in enumerate(rng.permutation(videos)):
            split_of[int(i)] = SPLIT_NAMES[min(int(np.searchsorted(edges, (k + 0.5) / len(videos))), 2)]
    return [Unit(family, i, unit_seed(b.seed, family, i), cells[int(order[i % len(cells)])], split_of[i])
            for i in range(count)]


def pool_units(cfg: SyntheticConfig, family: str, count: int) -> list[Unit]:
    """Free draws; every 1/val_fraction-th video is held out (the objectives' held-out accuracies)."""
    p = cfg.pool
    held = set(np.round(np.arange(0, count, 1 / p.val_fraction)).astype(int).tolist()) if p.val_fraction else set()
    return [Unit(family, i, unit_seed(p.seed, family, i), (), "val" if i in held else "train") for i in range(count)]


def plan(cfg: SyntheticConfig, which: str) -> list[Unit]:
    """Every video of world `which`, family by family in the configured order."""
    if which not in WORLDS:
        raise ValueError(f"unknown synthetic world {which!r} (one of {WORLDS})")
    world = getattr(cfg, which)
    make = benchmark_units if which == "benchmark" else pool_units
    return [u for family, count in world.families.items() for u in make(cfg, family, count)]


def make_unit(unit: Unit, cfg: SyntheticConfig, segment: int) -> Made:
    """Render one video: frames uint8 [F, S, S, 3] and its labels (with how it was made, so a cached file
    is only reused when it would be identical)."""
    made = FAMILIES[unit.family].make(np.random.default_rng(unit.seed), canvas(cfg, segment), unit.design)
    labels = {**made.labels, "family": unit.family, "seed": unit.seed, "split": unit.split,
              "frames": len(made.frames), "fps": cfg.fps, "size": cfg.size, "segment": segment, "gop": cfg.gop,
              "crf": cfg.crf, "version": GENERATOR_VERSION}
    return Made(made.frames, labels)


def render_video(seed: int, cfg: SyntheticConfig, family: str = "bounce", segment: int = 8) -> tuple[np.ndarray, dict]:
    """One video of `family` from `seed`, outside any plan: frames uint8 [F, S, S, 3] and its labels."""
    made = make_unit(Unit(family, 0, seed, (), "train"), cfg, segment)
    return made.frames, made.labels


def _is_cached(mp4: Path, sidecar: Path, labels: dict) -> bool:
    if not (mp4.is_file() and sidecar.is_file()):
        return False
    try:
        return json.loads(sidecar.read_text()) == labels
    except (OSError, ValueError):
        return False


def _make(job: tuple[SyntheticConfig, Unit, int, Path]) -> Path:
    """Render and encode one video unless an identical one is on disk (the mp4 first: a sidecar implies
    a complete video)."""
    cfg, unit, segment, out_dir = job
    made = make_unit(unit, cfg, segment)
    labels = json.loads(json.dumps(made.labels, sort_keys=True))  # as the sidecar reads back (tuples -> lists)
    mp4 = out_dir / f"{unit.name}.mp4"
    sidecar = mp4.with_suffix(".json")
    if not _is_cached(mp4, sidecar, labels):
        mp4.parent.mkdir(parents=True, exist_ok=True)
        write_video(made.frames, mp4, cfg.fps, cfg.gop, cfg.crf)
        write_text_atomic(sidecar, json.dumps(labels, sort_keys=True) + "\n")
    return mp4


def generate(cfg: SyntheticConfig, which: str, out_dir: Path, segment: int, progress=None) -> list[Path]:
    """Writes out_dir/<family>/<i:05d>.mp4 + .json for every video of world `which` ("benchmark" or
    "pool"), in `cfg.workers` processes; returns the mp4 paths in plan order. Videos already on disk
    with the same labels are not made again, so re-runs are cheap. `segment` is the clip length (a
    matched set's members are one clip each); `progress(n)` is called as videos finish."""
    units = plan(cfg, which)
    out_dir = Path(out_dir)
    jobs = [(cfg, u, segment, out_dir) for u in units]
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
