"""The benchmark's tasks, each defined once: its name, what it is for, its classes, how it is scored,
the scene family its clips come from and how its items are cut from one video.

What a task is for (`kind`) decides where it is reported:
- HELD_OUT: the headline. No pretraining objective sees its label in any form, and neither a single
  frame nor a pretext transformation gives it (each task's `why` says how).
- DIAGNOSTIC ("trained-on"): labels a pretext objective trains on (reversal, playback speed,
  shuffling). Reported beside the objective's own heads, zero-shot: a probe there re-reads them.
- CONTENT: appearance (object count, shape): what temporal training keeps of content.
- CONTROL: questions with no answer in the video; every model must score chance.

How it is scored (`scoring`):
- ACCURACY: one label per clip, accuracy of the predicted class;
- VIEWS: one label per video, several clips (views) of it: a video's class is the one its clips' mean
  score ranks first (the field's multi-view protocol: V-JEPA, VideoMAE), accuracy per video (top-1,
  and top-5 where there are more than five classes);
- MATCHED: clips come in matched sets of possible (label 1) and impossible or counterfactual (label 0)
  members; a model is right on a comparison when its mean score of the possible members is above that
  of the others (a tie counts half). A probe learns the score as possible-vs-impossible on training
  sets; a predictive model can give it zero-shot as negative surprise. Splicing makes a set's frames
  (and frame pairs) the same multiset in both groups, so any linear score of order-free features ties.

A clip key names a window of a video (start, frame step, reversed, shuffled): every distinct clip is
embedded once per model and shared by all tasks that use it. Splits are the benchmark world's own
(balanced inside each design cell), by video: a matched set is one video, so never split.
To add a task: a scene family in data/synthetic/families.py if it needs new physics, one `TaskSpec`
in TASKS below, its videos in params.yaml (ingest.synthetic.benchmark.families) and its name in
probe_eval.tasks.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from videossl.data.lists import CLASS
from videossl.data.shards import BENCHMARK, LABELLED, SPLITS, ClipStore, Video
from videossl.data.synthetic import GRAVITY_NAMES, SHAPES
from videossl.data.transforms import reverse

HELD_OUT, DIAGNOSTIC, CONTENT, CONTROL = "held_out", "diagnostic", "content", "control"
CLASSIFICATION = "classification"  # a labelled dataset's own classes (ingest.sources: list:<file>)
ACCURACY, MATCHED, VIEWS = "accuracy", "matched", "views"
PER_CLASS_SCORING = (ACCURACY, VIEWS)  # scored by a predicted class (confusion matrices, per-class recall)
ARROW_CLASSES = ("backward", "forward")
POSSIBLE_CLASSES = ("impossible", "possible")


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


@dataclass(frozen=True)
class Item:
    clip: ClipKey
    label: int
    determinability: float = float("nan")  # how physically determinable the label is (arrow: irreversible change in the clip)


@dataclass(frozen=True)
class Comparison:
    """A matched task's question: the items (indices into the split's items) that should score higher
    than the others."""
    better: tuple[int, ...]
    worse: tuple[int, ...]
    video: str


@dataclass(frozen=True)
class Cut:
    """How a task cuts items from one video: the clip length, playback speeds, windows per video, and
    the seed that fixes where windows start. Every task draws its forward windows of a video from the
    same generator, so arrow of time, order, gravity and content share their clips (each embedded once)."""
    frames: int
    speeds: tuple[int, ...]
    windows: int
    seed: int
    classes: tuple[str, ...] = ()  # the task's classes where a video's label names one (classification)

    def rng(self, video: Video, purpose: str) -> np.random.Generator:
        return video_rng(video, self.seed, f"{purpose}|{self.windows}")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    scoring: str
    family: str                     # the benchmark scene family its videos come from
    classes: tuple[str, ...] | Callable[[dict], tuple[str, ...]]  # or a function of the probe_eval settings
    cut: Callable[[Video, Cut], list[Item]]
    why: str                        # the label's definition, and why no frame or pretext transformation gives it
    compare: Callable[[list[Item], str], list[tuple[tuple[int, ...], tuple[int, ...]]]] | None = None
    oriented: bool = False          # the label is a direction in the picture: it turns and mirrors with the clip

    def __reduce__(self):
        # pickled by name (probe workers rebuild it from TASKS): its functions are closures
        return (_spec, (self.name,))


def _spec(name: str) -> "TaskSpec":
    return TASKS[name]


@dataclass
class Task:
    """A task on one dataset: its items per split and, for matched tasks, the comparisons."""
    spec: TaskSpec
    classes: list[str]
    items: dict[str, list[Item]]
    comparisons: dict[str, list[Comparison]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def keys(self, split: str | None = None) -> list[ClipKey]:
        return [i.clip for s in ([split] if split else SPLITS) for i in self.items[s]]

    def labels(self, split: str) -> np.ndarray:
        return np.array([i.label for i in self.items[split]], dtype=np.int64)

    def views(self, split: str) -> list[tuple[str, list[int]]]:
        """VIEWS scoring: each video of the split (in order of first appearance) and its items' indices."""
        out: dict[str, list[int]] = {}
        for n, item in enumerate(self.items[split]):
            out.setdefault(item.clip.video, []).append(n)
        return list(out.items())


# --- cutting items ---------------------------------------------------------------------------


def span(frames: int, step: int) -> int:
    """Video frames a clip of `frames` frames at frame step `step` covers."""
    return (frames - 1) * step + 1


def random_starts(video: Video, length: int, n: int, rng: np.random.Generator) -> list[int]:
    """Up to `n` distinct random starts of windows `length` frames long, sorted."""
    room = video.frames - length + 1
    if room < 1:
        return []
    return sorted(rng.choice(room, size=min(n, room), replace=False).tolist())


def irreversible_change(video: Video, key: ClipKey, frames: int) -> float:
    """Irreversible change inside the clip (sum over its frame steps of the simulator's record)."""
    record = video.labels.get("irreversibility")
    if not record:
        return float("nan")
    return float(sum(record[key.start:key.start + span(frames, key.step) - 1]))


def _windows(video: Video, cut: Cut) -> list[int]:
    return random_starts(video, cut.frames, cut.windows, cut.rng(video, "windows"))


def _arrow(video: Video, cut: Cut) -> list[Item]:
    """Each window forward (1) and reversed (0): the same frames, so appearance cannot decide."""
    out = []
    for start in _windows(video, cut):
        fwd = ClipKey(video.source_id, start)
        d = irreversible_change(video, fwd, cut.frames)
        out += [Item(fwd, 1, d), Item(ClipKey(video.source_id, start, reversed=True), 0, d)]
    return out


def _speed(video: Video, cut: Cut) -> list[Item]:
    """Every speed at its own random start, so "how far into the video" never tells the speed (1x: the
    forward windows every task shares)."""
    rng = cut.rng(video, "speed")
    starts = {s: _windows(video, cut) if s == 1 else random_starts(video, span(cut.frames, s), cut.windows, rng)
              for s in cut.speeds}
    return [Item(ClipKey(video.source_id, start, s), i) for i, s in enumerate(cut.speeds) for start in starts[s]]


def _order(video: Video, cut: Cut) -> list[Item]:
    return [item for start in _windows(video, cut) for item in
            (Item(ClipKey(video.source_id, start), 1), Item(ClipKey(video.source_id, start, shuffled=True), 0))]


def _forward(label: Callable[[dict], int | None]) -> Callable[[Video, Cut], list[Item]]:
    """Forward windows labelled by a label of the video (none where it has none)."""
    def cut_items(video: Video, cut: Cut) -> list[Item]:
        y = label(video.labels)
        return [] if y is None else [Item(ClipKey(video.source_id, s), y) for s in _windows(video, cut)]
    return cut_items


def _segments(video: Video, cut: Cut) -> list[Item]:
    """A matched set's members, one clip each, labelled possible (1) or not (0)."""
    return [Item(ClipKey(video.source_id, s["start"]), int(s["possible"])) for s in video.labels.get("segments", ())
            if s["start"] + cut.frames <= video.frames]


def _members(**labels: int) -> Callable[[Video, Cut], list[Item]]:
    """Only the named members of a set, with the labels given (the future's control pair: the true
    continuation 1, its identical re-simulation 0)."""
    def cut_items(video: Video, cut: Cut) -> list[Item]:
        return [Item(ClipKey(video.source_id, s["start"]), labels[s["member"]]) for s in video.labels.get("segments", ())
                if s["member"] in labels and s["start"] + cut.frames <= video.frames]
    return cut_items


def _all_against_all(items: list[Item], video: str) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """One comparison per set: the possible members against the impossible ones."""
    better = tuple(i for i, it in enumerate(items) if it.label == 1)
    worse = tuple(i for i, it in enumerate(items) if it.label == 0)
    return [(better, worse)] if better and worse else []


def _true_against_each(items: list[Item], video: str) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """One comparison per counterfactual: the true continuation against it."""
    true = [i for i, it in enumerate(items) if it.label == 1]
    return [((t,), (i,)) for t in true[:1] for i, it in enumerate(items) if it.label == 0]


def _int_label(key: str, offset: int = 0, valid: Callable[[int], bool] = lambda y: True) -> Callable[[dict], int | None]:
    def read(labels: dict) -> int | None:
        if key not in labels:
            return None
        y = int(labels[key]) + offset
        return y if valid(y) else None
    return read


def _windows_of_class(video: Video, cut: Cut) -> list[Item]:
    """Forward windows of a labelled video, labelled by its class's index among the dataset's classes."""
    y = cut.classes.index(str(video.labels[CLASS]))
    return [Item(ClipKey(video.source_id, s), y) for s in _windows(video, cut)]


def class_names(videos: list[Video]) -> list[str]:
    """The classes of labelled videos, sorted (index labels in numeric order)."""
    names = {str(v.labels[CLASS]) for v in videos if CLASS in v.labels}
    return sorted(names, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))


def _shape_label(labels: dict) -> int | None:
    return SHAPES.index(labels["shape"]) if labels.get("shape") in SHAPES else None


# --- the tasks ----------------------------------------------------------------------------------

TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("gravity_law", HELD_OUT, ACCURACY, "bounce", GRAVITY_NAMES, _forward(_int_label("gravity")),
             "Which way gravity points, read from how objects accelerate: they bounce on invisible shelves, so "
             "every arc returns to its height and the mean displacement is zero (a drift detector is at chance); "
             "positions are uniform on the torus, so no frame shows it. Elastic bounces are reversible, so time "
             "reversal keeps the label, and speed or shuffling does not change the direction.", oriented=True),
    TaskSpec("permanence", HELD_OUT, MATCHED, "permanence", POSSIBLE_CLASSES, _segments,
             "Object permanence: a body that glides behind a screen goes on gliding there and comes out when its "
             "speed and the screen's width say; staying hidden longer (it lingered, or was gone for a while) or "
             "shorter (it skipped part of its path) is impossible. A set is a 2 x 2 of screen width x speed that all "
             "go in and come out at the same frames: every width, speed and timing occurs once among the possible "
             "and once among the impossible members, so only how they fit together tells them apart.",
             _all_against_all),
    TaskSpec("continuity", HELD_OUT, MATCHED, "continuity", POSSIBLE_CLASSES, _segments,
             "Continuity: a body gliding diagonally behind a screen comes out on the line it went in on; coming out "
             "beside it (a jump while hidden) is impossible. The possible members are two parallel paths, spliced "
             "where both are hidden: frames and frame pairs match, and every member comes out at another height "
             "than it went in, so only the fit to its line tells them apart.", _all_against_all),
    TaskSpec("shape_constancy", HELD_OUT, MATCHED, "shape_constancy", POSSIBLE_CLASSES, _segments,
             "Shape constancy: a spinning body keeps its shape behind a screen. Possible members keep one of two "
             "shapes (triangle, square), impossible ones change; frames and frame pairs match, and the spin changes "
             "how the body looks from frame to frame in every member.", _all_against_all),
    TaskSpec("future", HELD_OUT, MATCHED, "future", POSSIBLE_CLASSES,
             _members(true=1, turned_left=0, turned_right=0, reversed_gravity=0),
             "Choosing the future: after a shared context, the true continuation against re-simulations of the same "
             "state (positions and velocities) with gravity turned a quarter turn either way or reversed. Every "
             "candidate is a forward-running flight under a gravity of the world's strength, velocity is continuous "
             "at the switch in all of them; only the fit of the acceleration to the context is wrong.",
             _true_against_each),
    TaskSpec("causality", HELD_OUT, MATCHED, "causality", POSSIBLE_CLASSES, _segments,
             "Cause and effect: a body starts moving when another strikes it (contact), not when the other stops "
             "short of it (gap). Same motions and timing; only the contact at the launch differs, and reversing or "
             "re-timing the clip does not make contact.", _all_against_all),
    TaskSpec("dye_arrow", HELD_OUT, ACCURACY, "dye", ARROW_CLASSES, _arrow,
             "Arrow of time on dye drops that land, spread over the water as thinning discs and bleach, a process the "
             "pretraining pool never shows (each drop's envelope is symmetric in time, and its rim changes about as "
             "much each frame all its life: only the spreading has a direction). Its label is the reversal a "
             "pretext objective trains on, but never on this process: it asks whether the sense of time's "
             "direction carries over."),
    TaskSpec("arrow_of_time", DIAGNOSTIC, ACCURACY, "bounce", ARROW_CLASSES, _arrow,
             "Forward against reversed windows of bounce scenes (the ripples are irreversible): the pretext arrow label."),
    TaskSpec("speed", DIAGNOSTIC, ACCURACY, "bounce", lambda s: tuple(f"{x}x" for x in s["speeds"]), _speed,
             "Playback speed (every 1st, 2nd, 4th frame): the pretext speed label."),
    TaskSpec("order", DIAGNOSTIC, ACCURACY, "bounce", ("shuffled", "ordered"), _order,
             "Frames in order against a fixed random permutation: the pretext shuffle label."),
    TaskSpec("content_count", CONTENT, ACCURACY, "bounce", lambda s: tuple(str(n) for n in range(1, s["max_objects"] + 1)),
             _forward(_int_label("n_objects", -1)), "How many objects: appearance, not time."),
    TaskSpec("content_shape", CONTENT, ACCURACY, "bounce", SHAPES, _forward(_shape_label),
             "Which shape: appearance, not time."),
    TaskSpec("reversible_arrow", CONTROL, ACCURACY, "reversible", ARROW_CLASSES, _arrow,
             "Arrow of time in a world of elastic collisions only: every video is as plausible backwards, so every "
             "model must be at chance."),
    TaskSpec(CLASSIFICATION, CLASSIFICATION, VIEWS, LABELLED, lambda s: s["labelled"], _windows_of_class,
             "Your labelled videos' classes (a `path label` list): the field's frozen-backbone evaluation, each "
             "model read by the same probes on clips of training videos, scored on test videos. What it measures "
             "is whatever the labels are about; beside the bag of frames it shows what time adds."),
    TaskSpec("future_control", CONTROL, MATCHED, "future", POSSIBLE_CLASSES, _members(true=1, control=0),
             "The true continuation against itself re-simulated after an unobservable draw: the same frames, so "
             "every model scores exactly one half.", _true_against_each),
)}
REAL_TASK = "real_arrow_of_time"  # real footage, with the codec control (eval/real_video.py)
TASK_NAMES = tuple(TASKS) + (REAL_TASK,)
# what probe-eval runs unless told: every task of the benchmark world and its real footage (classification
# needs a labelled list: -S probe_eval.tasks=[classification])
DEFAULT_TASKS = tuple(n for n in TASK_NAMES if n != CLASSIFICATION)


def of_kind(kind: str, names: list[str] | tuple[str, ...] = TASK_NAMES) -> list[str]:
    return [n for n in names if n in TASKS and TASKS[n].kind == kind]


def task_classes(spec: TaskSpec, speeds: list[int], max_objects: int, labelled: tuple[str, ...] = ()) -> list[str]:
    """A task's classes: fixed, or a function of the settings (speeds, max_objects) and of the labelled
    videos' classes (`labelled`, class_names)."""
    settings = dict(speeds=speeds, max_objects=max_objects, labelled=labelled)
    classes = spec.classes(settings) if callable(spec.classes) else spec.classes
    return list(classes)


def video_rng(video: Video, seed: int, purpose: str) -> np.random.Generator:
    """A generator fixed by (seed, video, purpose): the same clips in every run, different per video."""
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(f"{video.source_id}|{purpose}".encode())])


def build_tasks(store: ClipStore, names: list[str], speeds: list[int], clips_per_video: int,
                max_objects: int, seed: int = 0, splits: tuple[str, ...] = SPLITS) -> list[Task]:
    """The named tasks on the benchmark world's videos of each task's family, in the order given."""
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise KeyError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
    by_family: dict[str, list[Video]] = {}
    for v in store.videos_in(kind=BENCHMARK):
        by_family.setdefault(v.labels.get("family", ""), []).append(v)
    by_family[LABELLED] = [v for v in store.videos_in(kind=LABELLED) if CLASS in v.labels]
    labelled = tuple(class_names(by_family[LABELLED]))
    out = []
    for name in names:
        spec = TASKS[name]
        task = Task(spec, task_classes(spec, speeds, max_objects, labelled), {s: [] for s in splits},
                    {s: [] for s in splits} if spec.scoring == MATCHED else {})
        for video in by_family.get(spec.family, []):
            if video.split not in task.items:
                continue
            cut = Cut(store.clip_frames, tuple(speeds), clips_per_video, seed, labelled)
            items = [i for i in spec.cut(video, cut) if 0 <= i.label < len(task.classes)]
            base = len(task.items[video.split])
            task.items[video.split] += items
            if spec.scoring == MATCHED:
                task.comparisons[video.split] += [
                    Comparison(tuple(base + b for b in better), tuple(base + w for w in worse), video.source_id)
                    for better, worse in spec.compare(items, video.source_id)]
        out.append(task)
    return out


def clip_pixels(store: ClipStore, key: ClipKey) -> np.ndarray:
    """uint8 [T, H, W, 3] for a clip key."""
    frames = store.window(store.by_id[key.video], key.start, store.clip_frames, key.step)
    if key.shuffled:
        frames = np.ascontiguousarray(frames[shuffle_order(key, len(frames))])
    return reverse(frames) if key.reversed else frames
