"""The supervised ceiling: what a small video network trained WITH each task's labels reaches.

A score means nothing without its ceiling. This network sees the same training videos as the probes
(never validation or test videos), is selected on the validation items and scored once on the same
test items, so `<task>.supervised` is directly comparable with every model's probe score. It depends
only on the data, so its test outcomes are cached by dataset digest.

Each task gets its own small 3D CNN (four conv-BN-ReLU blocks on the frames and their temporal
differences, global average pooling, a linear head): every step draws `batch_per_task` fresh
training clips, each cut at a random start of a random training video exactly as the task defines its clips.
Each clip gets a random cyclic shift (the pond is a torus), a random rotation by a multiple of 90
degrees and a random mirror, with the gravity label turned with it: the physics is the same
everywhere and in every orientation, and without it the network learns to recognise the few
training videos rather than the motion.
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
from videossl.data.shards import ClipStore, Video
from videossl.data.synthetic import GRAVITY_DIRECTIONS, SHAPES
from videossl.data.transforms import to_model_input
from videossl.eval.tasks import CLASSIFICATION, Task, clip_pixels, span
from videossl.storage import write_text_atomic
from videossl.train import precision

CEILING_VERSION = 3  # 3: one network per task  # bump when the network or its training changes: cached ceilings then never match


class VideoCNN(nn.Module):
    """[B, 3, T, H, W] -> {task: logits}: 3D conv blocks (halving space, then time), mean pooled."""

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
        self.heads = nn.ModuleDict({t: nn.Linear(4 * w, k) for t, k in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        diff = torch.cat([x[:, :, 1:] - x[:, :, :-1], torch.zeros_like(x[:, :, :1])], dim=2)
        z = self.trunk(torch.cat([x, diff], dim=1)).mean((2, 3, 4))
        return {t: h(z) for t, h in self.heads.items()}


# ----------------------------------------------------------------------------------------------
# training clips: the tasks' own definitions, at random starts of random training videos


def _random_order(frames: int, rng: np.random.Generator) -> np.ndarray:
    identity = np.arange(frames)
    while True:
        order = rng.permutation(frames)
        if not (np.array_equal(order, identity) or np.array_equal(order, identity[::-1])):
            return order


def draw_example(task: str, store: ClipStore, video: Video, speeds: list[int],
                 rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
    """One training clip of `task` from `video` and its label (None: the video has no label for it)."""
    t = store.clip_frames
    if task == "speed":
        label = int(rng.integers(len(speeds)))
        step = speeds[label]
    else:
        label, step = 0, 1
    room = video.frames - span(t, step) + 1
    if room < 1:
        return None
    clip = store.window(video, int(rng.integers(room)), t, step)
    if task in ("arrow_of_time", "order"):
        label = int(rng.integers(2))  # 1 = forward / ordered
        if not label:
            clip = clip[::-1] if task == "arrow_of_time" else clip[_random_order(t, rng)]
    elif task == "gravity":
        if "gravity" not in video.labels:
            return None
        label = int(video.labels["gravity"])
    elif task == "content_count":
        label = int(video.labels.get("n_objects", 0)) - 1
        if label < 0:
            return None
    elif task == "content_shape":
        if video.labels.get("shape") not in SHAPES:
            return None
        label = SHAPES.index(video.labels["shape"])
    return np.ascontiguousarray(clip), label


def _gravity_index(vec: np.ndarray) -> int:
    return int(np.argmin(np.abs(GRAVITY_DIRECTIONS - vec).sum(1)))


def orient(clip: np.ndarray, label: int, task: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A random cyclic shift, quarter turn and mirror of a clip [T, H, W, 3]; the gravity label turns
    with it. The pond is a torus, so a shift is the same physics elsewhere; without shifts the network
    learns each training video's pond bed in each orientation instead of the motion. np.rot90 over
    (rows, cols) moves an image-coordinate direction (x, y) to (y, -x)."""
    turns, mirror = int(rng.integers(4)), bool(rng.integers(2))
    clip = np.roll(clip, (int(rng.integers(clip.shape[1])), int(rng.integers(clip.shape[2]))), axis=(1, 2))
    if mirror:
        clip = clip[:, :, ::-1]
    clip = np.rot90(clip, turns, axes=(1, 2))
    if task == "gravity":
        vec = GRAVITY_DIRECTIONS[label] * ([-1.0, 1.0] if mirror else [1.0, 1.0])
        for _ in range(turns):
            vec = np.array([vec[1], -vec[0]])
        label = _gravity_index(vec)
    return np.ascontiguousarray(clip), label


# ----------------------------------------------------------------------------------------------
# training and scoring


@dataclass
class CeilingResult:
    """Per task: the test items' correctness (1/0) at the epoch chosen on validation."""
    correct: dict[str, np.ndarray]
    val_accuracy: dict[str, float]
    step: dict[str, int]
    seconds: float


def _predict(model: VideoCNN, task: str, clips: list[np.ndarray], batch: int, autocast) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode(), autocast:
        for i in range(0, len(clips), batch):
            x = to_model_input(torch.from_numpy(np.stack(clips[i:i + batch])))
            out.append(model(x)[task].float().argmax(1).numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _train_one(store: ClipStore, task: Task, speeds: list[int], cfg: CeilingConfig, seed: int,
               autocast, log: Callable[[str], None]) -> tuple[np.ndarray, float, int]:
    """One task's network: trained on its training videos, chosen on validation, scored once on test.
    Returns the test items' correctness, the chosen validation accuracy and its step."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 5, CLASSIFICATION.index(task.name)])
    videos = sorted({k.video for k, _ in task.items["train"]})
    model = VideoCNN(cfg.width, {task.name: len(task.classes)})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fixed = {s: [clip_pixels(store, k) for k, _ in task.items[s]] for s in ("val", "test")}
    labels = {s: np.array([y for _, y in task.items[s]]) for s in ("val", "test")}
    best: tuple[float, dict | None, int] = (-1.0, None, 0)  # val accuracy, the network's weights then, step
    for step in range(cfg.steps):
        for group in optimizer.param_groups:  # cosine decay after a short warm-up
            warm = min(1.0, (step + 1) / max(1, cfg.steps // 20))
            group["lr"] = cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        clips, ys = [], []
        while len(clips) < cfg.batch_per_task:
            drawn = draw_example(task.name, store, store.by_id[videos[int(rng.integers(len(videos)))]], speeds, rng)
            if drawn is not None:
                clip, y = orient(*drawn, task.name, rng)
                clips.append(clip)
                ys.append(y)
        with autocast:
            logits = model(to_model_input(torch.from_numpy(np.stack(clips))))[task.name]
        loss = F.cross_entropy(logits.float(), torch.tensor(ys))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            val = float((_predict(model, task.name, fixed["val"], cfg.batch_size, autocast) == labels["val"]).mean())
            if val > best[0] or best[1] is None:  # ties keep the earlier (shorter-trained) network
                best = (val, {k: v.clone() for k, v in model.state_dict().items()}, step + 1)
            log(f"ceiling: {task.name} step {step + 1}/{cfg.steps} loss {loss.item():.3f}; val {val:.3f}")
            if best[0] >= 1.0:  # nothing later can beat it (ties keep the earlier): the same result, sooner
                break
    model.load_state_dict(best[1])
    correct = (_predict(model, task.name, fixed["test"], cfg.batch_size, autocast) == labels["test"])
    return correct.astype(np.float64), best[0], best[2]


def train_ceiling(store: ClipStore, tasks: list[Task], speeds: list[int], cfg: CeilingConfig, seed: int,
                  log: Callable[[str], None] = print) -> CeilingResult:
    """One network per task. A shared trunk trained on all tasks at once was measured worse: gravity
    reached 0.68-0.88 on validation beside the other tasks and 0.99 alone (the time-reversed and
    shuffled clips of arrow and order share its batch-norm statistics and its features)."""
    t0 = time.perf_counter()
    cpu = torch.device("cpu")
    autocast = precision.autocast(precision.autocast_dtype("bf16", cpu), cpu)  # 1.3x on AMX CPUs
    correct, val, steps = {}, {}, {}
    for task in tasks:
        correct[task.name], val[task.name], steps[task.name] = _train_one(store, task, speeds, cfg, seed, autocast, log)
    return CeilingResult(correct, val, steps, time.perf_counter() - t0)


def cache_path(root: str | os.PathLike | None, dataset_digest: str, tasks: list[Task], speeds: list[int],
               cfg: CeilingConfig, seed: int) -> Path | None:
    if root is None:
        return None
    ident = json.dumps({"dataset": dataset_digest, "tasks": [t.name for t in tasks], "speeds": speeds,
                        "cfg": cfg.model_dump(mode="json"), "seed": seed, "v": CEILING_VERSION}, sort_keys=True)
    return Path(root) / f"ceiling-{hashlib.sha256(ident.encode()).hexdigest()[:20]}.json"


def ceiling(store: ClipStore, tasks: list[Task], speeds: list[int], cfg: CeilingConfig, seed: int,
            dataset_digest: str, cache_dir: str | os.PathLike | None,
            log: Callable[[str], None] = print) -> CeilingResult:
    """The ceiling of `tasks`, from the cache when this dataset's was trained before."""
    path = cache_path(cache_dir, dataset_digest, tasks, speeds, cfg, seed)
    if path is not None and path.is_file():
        try:
            z = json.loads(path.read_text())
            return CeilingResult({n: np.array(v, dtype=np.float64) for n, v in z["correct"].items()},
                                 z["val_accuracy"], z["step"], z["seconds"])
        except (OSError, ValueError, KeyError) as e:  # a damaged cache is recomputed, never trusted
            log(f"ceiling: ignoring unreadable cache {path} ({e})")
    result = train_ceiling(store, tasks, speeds, cfg, seed, log)
    if path is not None:
        write_text_atomic(path, json.dumps({"correct": {n: v.astype(int).tolist() for n, v in result.correct.items()},
                                            "val_accuracy": result.val_accuracy, "step": result.step,
                                            "seconds": round(result.seconds, 2)}) + "\n")
    return result
