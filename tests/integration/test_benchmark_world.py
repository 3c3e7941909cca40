"""The default benchmark world leaks nothing to a bag of frames, and its temporal labels are in the motion.

A task is temporal only if a bag of frames cannot solve it. On a large sample of the default world
(thousands of clips, so that a leak of a few points stands out of the noise), order-free features of
single frames, from a nonlinear frame encoder and from pixel statistics, are probed on every temporal
task: arrow of time and order must be exactly at chance, and the primary (linear) probe within 0.03
of chance on speed and gravity. A feature that sees motion (how each frame shifts into the next)
reads gravity and speed from the same clips, so the test has the power to see what it looks for.

One thing a bag of frames can always see is how a clip's average frame is smoothed by motion: it is
a long exposure, smoother when more time passes (the 4x clips) and streaked along the axis objects
sink on (but not towards which end: a streak has no direction). Its mean is the same at every speed
and gravity, so a linear probe cannot use it, but a nonlinear one can: kNN on pixel statistics reads
speed at ~0.5 (chance 0.33) and gravity at ~0.36 (chance 0.25; the axis alone would give at most
0.5). The bounds below keep these known effects from growing unnoticed; the report shows every probe
of the bag of frames beside the video model, with the null's range.
"""
from __future__ import annotations

import pytest
import torch

from tests.worlds import write_world
from videossl.config import KnnProbeConfig, SyntheticConfig
from videossl.data.shards import ClipStore
from videossl.eval import features, probes
from videossl.eval.suite import splits_of
from videossl.eval.tasks import build_tasks, task_keys
from videossl.models.vit import VideoViT, VitShape

LEAK_TOLERANCE = 0.03  # a bag of frames at most this far above chance on a temporal task (primary probe)
# kNN, above chance: the known long-exposure effects (measured: speed +0.18, gravity +0.11)
LONG_EXPOSURE_BOUND = {"speed": 0.25, "gravity": 0.15}
CELLS = 4 * 3 * 3      # gravity x object count x shape


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    cfg = SyntheticConfig(benchmark={"videos": CELLS * 30, "seed": 3, "splits": {"train": 0.4, "val": 0.1, "test": 0.5}})
    store = ClipStore(write_world(tmp_path_factory.mktemp("leak-world"), cfg))
    tasks = {t.name: t for t in build_tasks(store, ["arrow_of_time", "speed", "gravity", "order"], [1, 2, 4], 3)}
    keys = sorted({k for t in tasks.values() for k in task_keys(t)}, key=features.key_str)
    return store, tasks, keys


def _pixel_statistics(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: its 8x8-pooled pixels and their squares (a second, nonlinear, order-free view)."""
    x = frames[:, 0].permute(0, 3, 1, 2).float() / 255
    pooled = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
    vec = torch.cat([pooled, pooled ** 2], 1)
    return vec, vec[:, None]


def _bag_of_frames_models() -> list[features.FeatureModel]:
    torch.manual_seed(0)
    encoder = VideoViT(VitShape(frames=1, img_size=32, patch=8, tubelet=1, dim=48, depth=2, heads=4))
    return [features.encoder_model("frame_encoder", encoder, "leak-test-encoder", 2),
            features.FeatureModel("pixel_statistics", "leak-test-pixels", _pixel_statistics, features.MEAN_FRAMES,
                                  frame_table="pixel-statistics")]


def _motion(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each frame is from the previous one shifted by one pixel in each direction (torus roll):
    the best shift is the motion. The positive control."""
    x = clips.float().mean(-1)  # [B, T, H, W]
    prev, nxt = x[:, :-1], x[:, 1:]
    errors = [(nxt - torch.roll(prev, shifts=s, dims=d)).abs().mean((1, 2, 3))
              for d in (2, 3) for s in (-2, -1, 1, 2)]
    vec = torch.stack(errors, 1)
    return vec, vec[:, None]


def _probe(task, feats, index, probe):
    sp = splits_of(task, index)
    split = lambda s: (feats.vectors[sp[s].rows], sp[s].labels)  # noqa: E731
    classes = len(task.classes)
    if probe == "linear":
        return probes.linear_probe(split("train"), split("val"), split("test"), classes, [0.01, 1.0, 100.0], 100)
    return probes.knn_probe(split("train"), split("val"), split("test"), classes, KnnProbeConfig(ks=[10, 50]))


def test_a_bag_of_frames_reads_no_temporal_label(world, tmp_path):
    store, tasks, keys = world
    index = {k: i for i, k in enumerate(keys)}
    feats = features.extract(store, keys, _bag_of_frames_models(), 256, features.FeatureCache(None, ""))
    failures = []
    for name, f in feats.items():
        for task in tasks.values():
            for probe in ("linear", "knn"):
                acc = _probe(task, f, index, probe).accuracy
                chance = 1 / len(task.classes)
                if task.name in ("arrow_of_time", "order"):
                    bound = chance  # the same frames: bit-identical features, exactly one half
                elif probe == "knn":
                    bound = chance + LONG_EXPOSURE_BOUND[task.name]
                else:
                    bound = chance + LEAK_TOLERANCE
                if acc > bound or (task.name in ("arrow_of_time", "order") and acc != 0.5):
                    failures.append(f"{name}/{probe} reads {task.name}: {acc:.3f} (chance {chance:.3f})")
    assert not failures, failures


def test_motion_reads_gravity_and_speed_from_the_same_clips(world):
    store, tasks, keys = world
    wanted = [k for name in ("gravity", "speed") for k in task_keys(tasks[name])]
    index = {k: i for i, k in enumerate(wanted)}
    model = features.FeatureModel("motion", "leak-test-motion", _motion)
    feats = features.extract(store, wanted, [model], 256, features.FeatureCache(None, ""))["motion"]
    assert _probe(tasks["gravity"], feats, index, "linear").accuracy > 0.6
    assert _probe(tasks["speed"], feats, index, "linear").accuracy > 0.6
