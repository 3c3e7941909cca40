"""Benchmark tasks built from the synthetic benchmark world: labels only time can give, and content controls.

A classification task is a list of (clip key, label) per split; the retrieval task is a list of
(query clip, future clip) pairs per split. A clip key names a window of a video (start, frame step,
reversed, shuffled), so every distinct clip is embedded once per model and shared by all tasks that
use it. Splits are the benchmark world's own (stratified by label inside each design cell), by video.

Each video gives `clips_per_video` windows. A window's start is random (seeded by the video), so
clips are at a random phase against the codec's keyframes; every playback speed of the speed task
has its own random start, so "how far into the video" can never tell the speed.
- arrow_of_time: forward vs reversed (the same frames, so appearance cannot decide);
- speed: playback at each frame step (1x, 2x, 4x), each at its own start;
- gravity: the simulated gravity direction (4-way), from forward clips;
- order: frames in order vs a fixed random permutation of the same frames;
- future_retrieval: clip at t and the clip `future_offset` frames later;
- content_count / content_shape: how many objects, which shape: appearance controls, to show what
  video-native training keeps of content.
Real-video arrow of time (with its codec control) lives in eval/real_video.py.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from videossl.config import TEMPORAL_TASKS
from videossl.data.shards import BENCHMARK, SPLITS, ClipStore, Video
from videossl.data.synthetic import GRAVITY_NAMES, SHAPES
from videossl.data.transforms import reverse

CLASSIFICATION = ("arrow_of_time", "speed", "gravity", "order", "content_count", "content_shape")
RETRIEVAL = ("future_retrieval",)
TEMPORAL = TEMPORAL_TASKS  # config.py: one list for validation, the ceiling and the headline


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
    # split -> one number per item: how physically determinable its label is (arrow of time: the
    # ripple wavefront travel inside the clip, synthetic.Trajectory.irreversibility); empty: not recorded
    determinability: dict[str, list[float]] = field(default_factory=dict)


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


def span(frames: int, step: int) -> int:
    """Video frames a clip of `frames` frames at frame step `step` covers."""
    return (frames - 1) * step + 1


def random_starts(video: Video, length: int, n: int, rng: np.random.Generator) -> list[int]:
    """Up to `n` distinct random starts of windows `length` frames long, sorted."""
    room = video.frames - length + 1
    if room < 1:
        return []
    return sorted(rng.choice(room, size=min(n, room), replace=False).tolist())


def video_rng(video: Video, seed: int, purpose: str) -> np.random.Generator:
    """A generator fixed by (seed, video, purpose): the same clips in every run, different per video."""
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(f"{video.source_id}|{purpose}".encode())])


def clip_irreversibility(video: Video, key: ClipKey, frames: int) -> float:
    """Ripple wavefront travel inside the clip (sum over its frame pairs of the simulator's record)."""
    record = video.labels.get("irreversibility")
    if not record:
        return float("nan")
    return float(sum(record[key.start:key.start + span(frames, key.step) - 1]))


def build_tasks(store: ClipStore, names: list[str], speeds: list[int], clips_per_video: int,
                future_offset: int | None = None, max_objects: int = 3, seed: int = 0) -> list[Task | RetrievalTask]:
    """The named tasks on the benchmark world's videos, in the order given."""
    t = store.clip_frames
    offset = future_offset or t
    empty = lambda: {s: [] for s in SPLITS}  # noqa: E731
    tasks: dict[str, Task | RetrievalTask] = {
        "arrow_of_time": Task("arrow_of_time", ["backward", "forward"], empty(), empty()),
        "speed": Task("speed", [f"{s}x" for s in speeds], empty()),
        "gravity": Task("gravity", list(GRAVITY_NAMES), empty()),
        "order": Task("order", ["shuffled", "ordered"], empty()),
        "content_count": Task("content_count", [str(n) for n in range(1, max_objects + 1)], empty()),
        "content_shape": Task("content_shape", list(SHAPES), empty()),
        "future_retrieval": RetrievalTask("future_retrieval", offset, empty(), empty()),
    }
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise KeyError(f"unknown task(s) {unknown}; known: {sorted(tasks)}")
    for video in store.videos_in(kind=BENCHMARK):
        split, vid, labels = video.split, video.source_id, video.labels
        rng = video_rng(video, seed, "windows")
        # the forward clip leaves room for its future clip; each faster speed draws its own starts
        starts = random_starts(video, max(t, offset + t), clips_per_video, rng)
        fast = {s: random_starts(video, span(t, s), clips_per_video, rng) for s in speeds if s > 1}
        for w, start in enumerate(starts):
            fwd, rev = ClipKey(vid, start), ClipKey(vid, start, reversed=True)
            tasks["arrow_of_time"].items[split] += [(fwd, 1), (rev, 0)]
            tasks["arrow_of_time"].determinability[split] += [clip_irreversibility(video, fwd, t)] * 2
            tasks["order"].items[split] += [(fwd, 1), (ClipKey(vid, start, shuffled=True), 0)]
            for i, s in enumerate(speeds):
                if s == 1:
                    tasks["speed"].items[split].append((fwd, i))
                elif w < len(fast[s]):
                    tasks["speed"].items[split].append((ClipKey(vid, fast[s][w], s), i))
            if "gravity" in labels:
                tasks["gravity"].items[split].append((fwd, int(labels["gravity"])))
            if 1 <= int(labels.get("n_objects", 0)) <= max_objects:
                tasks["content_count"].items[split].append((fwd, int(labels["n_objects"]) - 1))
            if labels.get("shape") in SHAPES:
                tasks["content_shape"].items[split].append((fwd, SHAPES.index(labels["shape"])))
            if start + offset + t <= video.frames:
                tasks["future_retrieval"].pairs[split].append((fwd, ClipKey(vid, start + offset)))
                tasks["future_retrieval"].groups[split].append(vid)
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
