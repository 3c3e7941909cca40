"""Benchmark tasks built from ingested videos: labels only time can give, and the content controls.

A classification task is a list of (clip key, label) per split; the retrieval task is a list of
(query clip, future clip) pairs per split. A clip key names a window of a video (start, frame step,
reversed, shuffled), so every distinct clip is embedded once per model and shared by all tasks that
use it. Splits are by source video (ingest's split groups), never by clip.

On the synthetic world (ground-truth labels from the simulator):
- arrow_of_time: forward vs reversed (the same frames, so appearance cannot decide);
- speed: the same start played at each frame step (1x, 2x, 4x);
- gravity: the simulated gravity direction (4-way);
- order: frames in order vs a fixed random permutation of the same frames;
- future_retrieval: clip at t and the clip `future_offset` frames later;
- content_count / content_shape: how many objects, which shape (videos whose objects share one
  shape): appearance tasks, to show what video-native training keeps of content.
Real-video arrow of time (with its codec control) lives in eval/real_video.py.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from videossl.data.shards import SPLITS, ClipStore, Video
from videossl.data.synthetic import SHAPES
from videossl.data.transforms import reverse

CLASSIFICATION = ("arrow_of_time", "speed", "gravity", "order", "content_count", "content_shape")
RETRIEVAL = ("future_retrieval",)
GRAVITY_CLASSES = ["down", "up", "left", "right"]


@dataclass(frozen=True)
class ClipKey:
    video: str     # source id
    start: int
    step: int = 1  # playback speed: every step-th frame
    reversed: bool = False
    shuffled: bool = False  # frames in a fixed random order (never the original one, never reversed)

    def frame_indices(self, frames: int) -> list[int]:
        """The video frame indices this clip shows, in the order it shows them."""
        idx = list(range(self.start, self.start + (frames - 1) * self.step + 1, self.step))
        if self.shuffled:
            idx = [idx[i] for i in shuffle_order(self, frames)]
        return idx[::-1] if self.reversed else idx


def shuffle_order(key: ClipKey, frames: int) -> np.ndarray:
    """A permutation fixed by the clip (a checksum seed, not Python's salted hash): the same clip is
    shuffled the same way in every run. Neither the identity nor the reversal, which are other classes."""
    rng = np.random.default_rng(zlib.crc32(f"{key.video}|{key.start}|{key.step}".encode()))
    identity = np.arange(frames)
    while True:
        order = rng.permutation(frames)
        if frames < 3 or not (np.array_equal(order, identity) or np.array_equal(order, identity[::-1])):
            return order


@dataclass
class Task:
    name: str
    classes: list[str]
    items: dict[str, list[tuple[ClipKey, int]]]  # split -> [(clip, label)]


@dataclass
class RetrievalTask:
    name: str
    offset: int  # frames between the query clip's start and its future clip's start
    pairs: dict[str, list[tuple[ClipKey, ClipKey]]]  # split -> [(clip at t, clip at t + offset)]
    groups: dict[str, list[str]]  # split -> source video of each pair (same-video distractors)


def evenly_spaced(first: int, last: int, n: int) -> list[int]:
    """Up to `n` evenly spaced integers in [first, last] (none when the range is empty)."""
    if last < first or n < 1:
        return []
    return sorted(set(np.linspace(first, last, num=min(n, last - first + 1)).round().astype(int).tolist()))


def window_starts(video: Video, span: int, n: int) -> list[int]:
    """Up to `n` evenly spaced starts of windows `span` frames long."""
    return evenly_spaced(0, video.frames - span, n)


def _single_shape(video: Video) -> int | None:
    shapes = set(video.labels.get("shapes", []))
    return SHAPES.index(shapes.pop()) if len(shapes) == 1 else None


def build_tasks(store: ClipStore, names: list[str], speeds: list[int], clips_per_video: int,
                future_offset: int | None = None, max_objects: int = 3) -> list[Task | RetrievalTask]:
    """The named tasks on the synthetic world's videos, in the order given."""
    t = store.clip_frames
    offset = future_offset or t
    # one window per start, long enough for the fastest playback and for the future clip
    span = max((t - 1) * max(speeds) + 1, offset + t)
    empty = lambda: {s: [] for s in SPLITS}  # noqa: E731
    tasks: dict[str, Task | RetrievalTask] = {
        "arrow_of_time": Task("arrow_of_time", ["backward", "forward"], empty()),
        "speed": Task("speed", [f"{s}x" for s in speeds], empty()),
        "gravity": Task("gravity", GRAVITY_CLASSES, empty()),
        "order": Task("order", ["shuffled", "ordered"], empty()),
        "content_count": Task("content_count", [str(n) for n in range(1, max_objects + 1)], empty()),
        "content_shape": Task("content_shape", list(SHAPES), empty()),
        "future_retrieval": RetrievalTask("future_retrieval", offset, empty(), empty()),
    }
    for video in store.videos_in(kind="synthetic"):
        split, vid = video.split, video.source_id
        shape = _single_shape(video)
        for start in window_starts(video, span, clips_per_video):
            fwd = ClipKey(vid, start)
            tasks["arrow_of_time"].items[split] += [(fwd, 1), (ClipKey(vid, start, reversed=True), 0)]
            tasks["order"].items[split] += [(fwd, 1), (ClipKey(vid, start, shuffled=True), 0)]
            for i, s in enumerate(speeds):
                tasks["speed"].items[split].append((ClipKey(vid, start, s), i))
            if "gravity" in video.labels:
                tasks["gravity"].items[split].append((fwd, int(video.labels["gravity"])))
            if 1 <= int(video.labels.get("n_objects", 0)) <= max_objects:
                tasks["content_count"].items[split].append((fwd, int(video.labels["n_objects"]) - 1))
            if shape is not None:
                tasks["content_shape"].items[split].append((fwd, shape))
            tasks["future_retrieval"].pairs[split].append((fwd, ClipKey(vid, start + offset)))
            tasks["future_retrieval"].groups[split].append(vid)
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise KeyError(f"unknown task(s) {unknown}; known: {sorted(tasks)}")
    return [tasks[n] for n in names]


def task_keys(task: Task | RetrievalTask) -> list[ClipKey]:
    if isinstance(task, Task):
        return [k for items in task.items.values() for k, _ in items]
    return [k for pairs in task.pairs.values() for pair in pairs for k in pair]


def clip_pixels(store: ClipStore, key: ClipKey) -> np.ndarray:
    """uint8 [T, H, W, 3] for a clip key."""
    frames = store.window(store.by_id[key.video], key.start, store.clip_frames, key.step)
    if key.shuffled:
        frames = np.ascontiguousarray(frames[shuffle_order(key, len(frames))])
    return reverse(frames) if key.reversed else frames
