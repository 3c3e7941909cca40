"""The supervised ceiling: what a small video network trained WITH each task's labels reaches.

A score means nothing without its ceiling. This network sees the same training videos as the probes
(never validation or test videos), is selected on the validation units and scored once on the same
test units, so `<task>.supervised` is directly comparable with every model's probe score. It depends
only on the data, so its test outcomes are cached by dataset digest.

Each task gets its own small 3D CNN (four conv-BN-ReLU blocks on the frames and their temporal
differences, global average pooling, a linear head), trained on the task's own training items: for
window tasks `windows` random windows of every training video (cut exactly as the task cuts them,
far more than the probes see) with cross-entropy; for matched tasks whole training sets with a
ranking loss per comparison, the question the task asks (per-clip cross-entropy was measured to
stay at chance on sets whose members differ only in how they relate over time). Each clip gets a random
cyclic shift (the world is a torus), a random quarter turn and a random mirror, with a direction
label (gravity) turned with it: the physics is the same everywhere and in every orientation, and
without it the network learns to recognise the few training videos rather than the motion.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videossl.config import CeilingConfig
from videossl.data.shards import ClipStore
from videossl.data.synthetic import GRAVITY_DIRECTIONS
from videossl.data.transforms import to_model_input
from videossl.eval.suite import outcomes_of
from videossl.eval.tasks import MATCHED, Task, build_tasks, clip_pixels
from videossl.storage import write_text_atomic
from videossl.train import precision

CEILING_VERSION = 6  # 6: patience counts min_delta gains; 5: time cells, ranking loss  # bump when the training changes


TIME_CELLS = 2  # the trunk's output is pooled over space and into this many time cells, kept apart


class VideoCNN(nn.Module):
    """[B, 3, T, H, W] -> {task: logits}: 3D conv blocks (halving space, then time), pooled over space
    and into TIME_CELLS time cells side by side: the head can compare the start of a clip with its end
    (what happened before a screen with what came out of it), which one mean over time would blur."""

    def __init__(self, width: int, classes: dict[str, int]):
        super().__init__()

        def block(c_in: int, c_out: int, stride: tuple[int, int, int]) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm3d(c_out),
                                 nn.ReLU(inplace=True))

        w = width
        # 6 input channels: the frames and their temporal differences (a motion-energy front end: what
        # changes between frames is what every temporal task is about)
        self.trunk = nn.Sequential(block(6, w, (1, 2, 2)), block(w, 2 * w, (1, 2, 2)), block(2 * w, 2 * w, (2, 2, 2)),
                                   block(2 * w, 4 * w, (2, 1, 1)))
        self.heads = nn.ModuleDict({t: nn.Linear(4 * w * TIME_CELLS, k) for t, k in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        diff = torch.cat([x[:, :, 1:] - x[:, :, :-1], torch.zeros_like(x[:, :, :1])], dim=2)
        z = F.adaptive_avg_pool3d(self.trunk(torch.cat([x, diff], dim=1)), (TIME_CELLS, 1, 1)).flatten(1)
        return {t: h(z) for t, h in self.heads.items()}


# ----------------------------------------------------------------------------------------------
# augmentation


def _gravity_index(vec: np.ndarray) -> int:
    return int(np.argmin(np.abs(GRAVITY_DIRECTIONS - vec).sum(1)))


def orient(clip: np.ndarray, label: int, oriented: bool, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A random cyclic shift, quarter turn and mirror of a clip [T, H, W, 3]; a direction label turns
    with it. The world is a torus, so a shift is the same physics elsewhere; without shifts the network
    learns each training video's bed in each orientation instead of the motion. np.rot90 over
    (rows, cols) moves an image-coordinate direction (x, y) to (y, -x)."""
    turns, mirror = int(rng.integers(4)), bool(rng.integers(2))
    clip = np.roll(clip, (int(rng.integers(clip.shape[1])), int(rng.integers(clip.shape[2]))), axis=(1, 2))
    if mirror:
        clip = clip[:, :, ::-1]
    clip = np.rot90(clip, turns, axes=(1, 2))
    if oriented:
        vec = GRAVITY_DIRECTIONS[label] * ([-1.0, 1.0] if mirror else [1.0, 1.0])
        for _ in range(turns):
            vec = np.array([vec[1], -vec[0]])
        label = _gravity_index(vec)
    return np.ascontiguousarray(clip), label


# ----------------------------------------------------------------------------------------------
# training and scoring


@dataclass
class CeilingResult:
    """Per task: the test units' outcomes (1 right, 0 wrong, 0.5 a tied comparison) of the network
    chosen on validation."""
    correct: dict[str, np.ndarray]
    val_accuracy: dict[str, float]
    step: dict[str, int]
    seconds: float


def _logits(model: VideoCNN, task: str, clips: list[np.ndarray], batch: int, autocast) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode(), autocast:
        for i in range(0, len(clips), batch):
            x = to_model_input(torch.from_numpy(np.stack(clips[i:i + batch])))
            out.append(model(x)[task].float().numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 1))


def _draw_accuracy(store: ClipStore, task: Task, pool: list, n: int, rng: np.random.Generator):
    """n random training items, each shifted, turned and mirrored on its own: (clips, labels)."""
    drawn = [orient(clip_pixels(store, pool[j].clip), pool[j].label, task.spec.oriented, rng)
             for j in rng.integers(len(pool), size=n)]
    return [c for c, _ in drawn], [y for _, y in drawn]


def _draw_sets(store: ClipStore, task: Task, n: int, rng: np.random.Generator):
    """Whole training sets, about n clips, every member of a set shifted, turned and mirrored alike (the
    members stay matched): (clips, the comparisons as index tuples into the clips)."""
    items, comparisons = task.items["train"], task.comparisons["train"]
    clips: list[np.ndarray] = []
    pairs: list[tuple[list[int], list[int]]] = []
    while len(clips) < n:
        c = comparisons[int(rng.integers(len(comparisons)))]
        state = rng.bit_generator.state  # one draw of the augmentation, replayed for each member
        where = {}
        for i in c.better + c.worse:
            rng.bit_generator.state = state
            where[i] = len(clips)
            clips.append(orient(clip_pixels(store, items[i].clip), 0, False, rng)[0])
        pairs.append(([where[i] for i in c.better], [where[i] for i in c.worse]))
    return clips, pairs


def _ranking_loss(logits: torch.Tensor, pairs: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """The matched task's own question as a loss: per comparison, softplus(mean score of the worse
    members - mean score of the better ones), a score being how possible a clip looks (logit 1 - logit 0).
    A clip on its own is trained on what tells it from its set's other members, the differences the
    task asks about, instead of everything that varies between sets."""
    s = logits[:, 1] - logits[:, 0]
    gaps = torch.stack([s[w].mean() - s[b].mean() for b, w in pairs])
    return F.softplus(gaps).mean()


def _train_one(store: ClipStore, task: Task, pool: list, cfg: CeilingConfig, seed: int, index: int,
               autocast, log: Callable[[str], None]) -> tuple[np.ndarray, float, int]:
    """One task's network: trained on `pool` (its training items; a matched task on its training sets,
    by comparison), chosen on validation, scored once on test. Returns the test units' outcomes, the
    chosen validation score and its step."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 5, index])
    model = VideoCNN(cfg.width, {task.name: len(task.classes)})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fixed = {s: [clip_pixels(store, i.clip) for i in task.items[s]] for s in ("val", "test")}
    matched = task.spec.scoring == MATCHED
    best: tuple[float, dict | None, int] = (-1.0, None, 0)  # val score, the network's weights then, step
    stale, level = 0, -1.0  # evaluations since the validation score last rose min_delta above `level`
    for step in range(cfg.steps):
        for group in optimizer.param_groups:  # cosine decay after a short warm-up
            warm = min(1.0, (step + 1) / max(1, cfg.steps // 20))
            group["lr"] = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        if matched:
            clips, pairs = _draw_sets(store, task, cfg.batch_per_task, rng)
        else:
            clips, labels = _draw_accuracy(store, task, pool, cfg.batch_per_task, rng)
        with autocast:
            logits = model(to_model_input(torch.from_numpy(np.stack(clips))))[task.name].float()
        loss = _ranking_loss(logits, pairs) if matched else F.cross_entropy(logits, torch.tensor(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val = float(outcomes_of(task, "val", _logits(model, task.name, fixed["val"], cfg.batch_size, autocast)).mean())
            if val > best[0]:  # the network chosen is the best on validation; ties keep the earlier (shorter-trained)
                best = (val, {k: v.clone() for k, v in model.state_dict().items()}, step + 1)
            # patience counts from the last real gain: validation noise alone does not keep a network training
            stale, level = (0, val) if val >= level + cfg.min_delta else (stale + 1, level)
            log(f"ceiling: {task.name} step {step + 1}/{cfg.steps} loss {loss.item():.3f}; val {val:.3f}")
            # nothing later can beat 1.0 (ties keep the earlier): the same result, sooner; and a network that
            # has not gained min_delta for `patience` evaluations is not learning this task in this budget
            if best[0] >= 1.0 or stale >= cfg.patience:
                break
    model.load_state_dict(best[1])
    test = outcomes_of(task, "test", _logits(model, task.name, fixed["test"], cfg.batch_size, autocast))
    return test, best[0], best[2]


CEILING_THREADS = 1  # per task network: see _ceiling_job


def _ceiling_job(job: tuple, log: Callable[[str], None] = print) -> tuple[np.ndarray, float, int]:
    """One task's network, in this process or a worker's, on `threads` torch threads (restored after):
    two small networks side by side use two cores better than one network on two threads, and under
    bf16 autocast the thread count changes the sums' order, so the count is fixed wherever it runs."""
    store, task, speeds, max_objects, cfg, seed, index, threads = job
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cpu = torch.device("cpu")
        autocast = precision.autocast(precision.autocast_dtype("bf16", cpu), cpu)  # 1.3x on AMX CPUs
        pool = build_tasks(store, [task.name], speeds, cfg.windows, max_objects, seed, splits=("train",))[0].items["train"]
        return _train_one(store, task, pool, cfg, seed, index, autocast, log)
    finally:
        torch.set_num_threads(before)


def train_ceiling(store: ClipStore, tasks: list[Task], speeds: list[int], max_objects: int, cfg: CeilingConfig,
                  seed: int, log: Callable[[str], None] = print, workers: int = 1) -> CeilingResult:
    """One network per task (a shared trunk was measured worse: reversed and shuffled clips of one task
    shared batch-norm statistics and features with another's). A window task trains on
    `cfg.windows` windows of each training video; a matched task on its training sets. With several
    `workers` the tasks train in spawned processes; every task is seeded on its own and trains on one
    thread wherever it runs, so the result does not depend on `workers`."""
    t0 = time.perf_counter()
    parallel = workers > 1 and len(tasks) > 1
    jobs = [(store, task, speeds, max_objects, cfg, seed, i, CEILING_THREADS) for i, task in enumerate(tasks)]
    if not parallel:
        results = [_ceiling_job(job, log) for job in jobs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # the longest first, so the last to finish is a short one: window tasks (many training items), then
        # matched tasks with the most comparisons (future: three per set; measured 500 steps, the others <= 300)
        order = sorted(range(len(jobs)), key=lambda i: (tasks[i].spec.scoring == MATCHED,
                                                        -len(tasks[i].comparisons.get("train", ()))))
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            done = dict(zip(order, pool.map(_ceiling_job, [jobs[i] for i in order])))
        results = [done[i] for i in range(len(jobs))]
    names = [t.name for t in tasks]
    return CeilingResult(*({n: r[k] for n, r in zip(names, results)} for k in range(3)),
                         time.perf_counter() - t0)


CEILING = "ceiling.json"  # the ceiling step's record (steps/ceiling.py), read by probe-eval


class CeilingMismatch(ValueError):
    pass


def identity(dataset_digest: str, tasks: list[Task], speeds: list[int], max_objects: int, cfg: CeilingConfig,
             seed: int) -> dict:
    """Everything a ceiling depends on: a record or a cache entry with another identity is not this one."""
    return {"dataset": dataset_digest, "tasks": [t.name for t in tasks], "speeds": list(speeds),
            "max_objects": max_objects, "cfg": cfg.model_dump(mode="json"), "seed": seed, "v": CEILING_VERSION}


def to_record(result: CeilingResult, ident: dict) -> dict:
    """The result without its wall time: the same data and settings give the same bytes."""
    return {"identity": ident, "correct": {n: v.tolist() for n, v in result.correct.items()},
            "val_accuracy": result.val_accuracy, "step": result.step}


def from_record(z: dict) -> CeilingResult:
    """A recorded ceiling (seconds: 0, nothing was trained to read it)."""
    return CeilingResult({n: np.array(v, dtype=np.float64) for n, v in z["correct"].items()},
                         z["val_accuracy"], z["step"], 0.0)


def read_record(path: Path, ident: dict) -> CeilingResult:
    """The ceiling a record holds; CeilingMismatch naming what differs when it was trained for another
    dataset, other tasks or other settings than `ident`."""
    z = json.loads(path.read_text())
    got = z.get("identity", {})
    differ = sorted(k for k in ident if got.get(k) != ident[k])
    if differ:
        raise CeilingMismatch(f"{path} was trained for another {', '.join(differ)} than this evaluation's "
                              f"(dataset {ident['dataset']}, tasks {ident['tasks']}): run `videossl ceiling` again")
    return from_record(z)


def cache_path(root: str | os.PathLike | None, ident: dict) -> Path | None:
    if root is None:
        return None
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    return Path(root) / f"ceiling-{key}.json"


def ceiling(store: ClipStore, tasks: list[Task], speeds: list[int], max_objects: int, cfg: CeilingConfig, seed: int,
            dataset_digest: str, cache_dir: str | os.PathLike | None,
            log: Callable[[str], None] = print, workers: int = 1) -> CeilingResult:
    """The ceiling of `tasks`, from the cache when this dataset's was trained before."""
    ident = identity(dataset_digest, tasks, speeds, max_objects, cfg, seed)
    path = cache_path(cache_dir, ident)
    if path is not None and path.is_file():
        try:
            return read_record(path, ident)
        except (OSError, ValueError, KeyError) as e:  # a damaged cache is recomputed, never trusted
            log(f"ceiling: ignoring unreadable cache {path} ({e})")
    result = train_ceiling(store, tasks, speeds, max_objects, cfg, seed, log, workers)
    if path is not None:
        write_text_atomic(path, json.dumps(to_record(result, ident)) + "\n")
    return result
