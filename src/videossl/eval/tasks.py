"""Benchmark tasks built from ingested synthetic videos: labels only time can give.

Each task is a list of (clip key, label) per split. A clip key names a window of a video
(start, frame step, reversed), so features are extracted once per distinct clip and shared by
all tasks that use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videossl.data.shards import SPLITS, ClipStore, Video
from videossl.data.transforms import reverse


@dataclass(frozen=True)
class ClipKey:
    video: str     # source id
    start: int
    step: int = 1  # playback speed: every step-th frame
    reversed: bool = False


@dataclass
class Task:
    name: str
    classes: list[str]
    items: dict[str, list[tuple[ClipKey, int]]]  # split -> [(clip, label)]


def window_starts(video: Video, frames: int, max_step: int, n: int) -> list[int]:
    """Up to `n` evenly spaced starts where a window at the largest speed still fits."""
    last = video.frames - (frames - 1) * max_step - 1
    if last < 0:
        return []
    return sorted(set(np.linspace(0, last, num=min(n, last + 1)).round().astype(int).tolist()))


def build_tasks(store: ClipStore, names: list[str], speeds: list[int], clips_per_video: int) -> list[Task]:
    """Tasks on the synthetic world's videos (the ones with ground-truth labels), split by source video."""
    t = store.clip_frames
    tasks = {
        "arrow_of_time": Task("arrow_of_time", ["backward", "forward"], {s: [] for s in SPLITS}),
        "speed": Task("speed", [f"{s}x" for s in speeds], {s: [] for s in SPLITS}),
        "gravity": Task("gravity", ["down", "up", "left", "right"], {s: [] for s in SPLITS}),
    }
    for video in store.videos_in(kind="synthetic"):
        for start in window_starts(video, t, max(speeds), clips_per_video):
            fwd = ClipKey(video.source_id, start)
            tasks["arrow_of_time"].items[video.split] += [(fwd, 1), (ClipKey(video.source_id, start, 1, True), 0)]
            for i, s in enumerate(speeds):
                tasks["speed"].items[video.split].append((ClipKey(video.source_id, start, s), i))
            if "gravity" in video.labels:
                tasks["gravity"].items[video.split].append((fwd, int(video.labels["gravity"])))
    return [tasks[n] for n in names]


def clip_pixels(store: ClipStore, key: ClipKey) -> np.ndarray:
    """uint8 [T, H, W, 3] for a clip key."""
    frames = store.window(store.by_id[key.video], key.start, store.clip_frames, key.step)
    return reverse(frames) if key.reversed else frames
