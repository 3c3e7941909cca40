"""The benchmark's front door: every task of probe_eval.tasks on one dataset, every model beside the
baselines, the ceilings, the objective's own heads and the headline, as one record.

`run` does no file I/O of its own (the probe-eval step writes what it returns); its only caches are
the feature and ceiling caches under probe_eval.cache_dir.
- held-out tasks: every model with every probe, the supervised ceiling, the null (chance);
- the headline, temporal_score: the mean over held-out tasks of (video model - strongest baseline)
  / (ceiling - strongest baseline) (suite.temporal_score);
- trained-on diagnostics: the same probes, and beside them the pretraining objective's own heads on
  the same test clips, zero-shot (`video_heads`);
- matched held-out tasks, where the objective predicts (mae, jepa): its surprise, zero-shot
  (`video_surprise`, eval/surprise.py);
- content and controls: the same probes;
- classification (a labelled list's classes): the same probes, and per class each drawn model's recall.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from videossl.config import Config
from videossl.data.shards import BENCHMARK, LABELLED, ClipStore
from videossl.eval import ceiling, features, probes, real_video, report, scores, suite
from videossl.eval.stats import VideoBootstrap
from videossl.eval.probes import per_class
from videossl.eval.scores import PER_CLASS
from videossl.eval.tasks import (CLASSIFICATION, PER_CLASS_SCORING, DIAGNOSTIC, HELD_OUT, MATCHED, REAL_TASK, TASKS, Task,
                                 build_tasks, clip_pixels, of_kind)

# The objective's heads, as the diagnostic tasks' labels: task -> (head, how the head's class maps to the task's)
HEAD_OF_TASK = {"arrow_of_time": "arrow", "speed": "speed", "order": "shuffle"}


@dataclass
class Record:
    metrics: dict                      # {"tasks": {task: scores}, "footage": [...]}
    confusions: dict = field(default_factory=dict)  # task -> model (the subject, the bag of frames) -> [C, C]
    classes: dict = field(default_factory=dict)     # task -> class names
    predicted: dict = field(default_factory=dict)   # task -> DVC confusion rows of the video model
    n_clips: int = 0
    timings: dict = field(default_factory=dict)


class BenchmarkError(ValueError):
    pass


def check(tasks: list[Task]) -> None:
    for task in tasks:
        for split in ("train", "test"):
            if not task.items[split] and task.spec.kind == CLASSIFICATION:
                raise BenchmarkError(f"probe_eval.tasks: {task.name} has no clips in the {split} split; it reads a "
                                     f"labelled list (ingest.sources: list:<file>, lines 'path label [split] "
                                     f"[group]') whose videos are at least one clip long")
            if not task.items[split]:
                raise BenchmarkError(f"probe_eval.tasks: {task.name} has no clips in the {split} split; ingest its "
                                     f"scene family '{task.spec.family}' (ingest.synthetic.benchmark.families) or "
                                     f"drop {task.name} from probe_eval.tasks")


def tasks_of(cfg: Config, store: ClipStore, names: list[str]) -> list[Task]:
    """The named tasks cut as every reader of the benchmark cuts them (the probes, the ceiling, the heads):
    `clips_per_video` windows per video, `diagnostic_clips_per_video` for the trained-on diagnostics."""
    ecfg = cfg.probe_eval

    def clips(name: str) -> int:
        return ecfg.diagnostic_clips_per_video if TASKS[name].kind == DIAGNOSTIC else ecfg.clips_per_video

    return [build_tasks(store, [n], ecfg.speeds, clips(n), cfg.ingest.synthetic.max_objects, cfg.seed)[0]
            for n in names]


def held_out_tasks(cfg: Config, store: ClipStore) -> list[Task]:
    return tasks_of(cfg, store, of_kind(HELD_OUT, cfg.probe_eval.tasks))


def ceiling_identity(cfg: Config, held: list[Task], digest: str) -> dict:
    ecfg = cfg.probe_eval
    return ceiling.identity(digest, held, ecfg.speeds, cfg.ingest.synthetic.max_objects, ecfg.ceiling, cfg.seed)


def supervised_ceiling(cfg: Config, store: ClipStore, held: list[Task], digest: str) -> ceiling.CeilingResult:
    """The held-out tasks' supervised ceiling (eval/ceiling.py), from the cache when trained before."""
    ecfg = cfg.probe_eval
    return ceiling.ceiling(store, held, ecfg.speeds, cfg.ingest.synthetic.max_objects, ecfg.ceiling, cfg.seed,
                           digest, ecfg.cache_dir, workers=ecfg.workers or os.cpu_count() or 1)


def _test_clips(store: ClipStore, task: Task) -> torch.Tensor:
    return torch.from_numpy(np.stack([clip_pixels(store, i.clip) for i in task.items["test"]]))


def head_scores(objective, info, store: ClipStore, tasks: list[Task], speeds: list[int], batch: int,
                boot: VideoBootstrap) -> dict[str, dict]:
    """Per diagnostic task, the objective's own head on its test clips, no probe: `video_heads` (with its
    interval). Nothing for tasks whose head the objective lacks."""
    from videossl.eval.objective_heads import pretext_heads, pretext_predictions

    heads = pretext_heads(objective) or {}
    out = {}
    for task in tasks:
        head = HEAD_OF_TASK.get(task.name)
        if head not in heads:
            continue
        pred = pretext_predictions(objective, _test_clips(store, task), batch)[head]
        if head == "speed":  # the head's classes index the objective's speeds; the task's index probe_eval's
            pred = np.array([speeds.index(info.speeds[p]) if info.speeds[p] in speeds else -1 for p in pred])
        else:  # arrow: 1 = backwards; shuffle: 1 = shuffled; the tasks' label 1 is forward / ordered
            pred = 1 - pred
        correct = (pred == task.labels("test")).astype(np.float64)
        out[task.name] = boot.estimate(correct, suite.unit_videos(task)).keys(scores.VIDEO + scores.HEADS)
    return out


def surprise_scores(objective, store: ClipStore, tasks: list[Task], batch: int, boot: VideoBootstrap) -> dict[str, dict]:
    """Per matched held-out task, the objective's predictor zero-shot (eval/surprise.py): a set is right
    when its possible members surprise it less than its impossible ones: `video_surprise` (with its
    interval), and `held_frame_surprise`, the same reading of the last seen frame held (no learning).
    Nothing when the objective does not predict."""
    from videossl.eval.surprise import held_frame_surprise, predictive_part, surprise

    part = predictive_part(objective)
    if part is None:
        return {}
    out = {}
    for task in (t for t in tasks if t.spec.scoring == MATCHED):
        clips = _test_clips(store, task)
        out[task.name] = {}
        # the predictor's reading, and beside it a predictor that learned nothing (the last seen frame held)
        for key, s in ((scores.VIDEO + scores.SURPRISE, surprise(part, clips, batch)),
                       (scores.HELD_FRAME + scores.SURPRISE, held_frame_surprise(clips, part))):
            correct = suite.outcomes_of(task, "test", np.stack([s, np.zeros_like(s)], 1))  # possible = less surprise
            out[task.name].update(boot.estimate(correct, suite.unit_videos(task)).keys(key))
    return out


def run(cfg: Config, store: ClipStore, models: list[features.FeatureModel], digest: str,
        objective_path: Path | None = None, real_pretrained: bool = False,
        trained_ceiling: ceiling.CeilingResult | None = None) -> Record:
    """The benchmark of `models` on `store`: the first is the subject (the video model, or an external
    encoder evaluated alone), the others its baselines and peers; `real_pretrained`: the video
    model trained on the real footage it is scored on (pretrain.real_footage), which the record says;
    `trained_ceiling`: the held-out tasks' ceiling (the ceiling step's record), trained here when None."""
    ecfg = cfg.probe_eval
    t0 = time.perf_counter()
    tasks = tasks_of(cfg, store, [n for n in ecfg.tasks if n != REAL_TASK])
    check(tasks)
    if REAL_TASK in ecfg.tasks and len({v.group for v in store.videos_in(kind="real")}) < 2:
        raise BenchmarkError(f"probe_eval.tasks: {REAL_TASK} needs real videos from at least 2 footage groups "
                             f"(ingest.sources: samples, a local folder or s3://); drop it from the tasks "
                             f"for synthetic-only data")
    if REAL_TASK in ecfg.tasks:
        try:  # the folds are cheap; finding them unusable after extraction costs minutes
            real_video.check_folds(real_video.real_arrow_tasks(store, ecfg.real.clips_per_video, True,
                                                               ecfg.real.val_fraction), store,
                                   ecfg.real.val_fraction, cfg.ingest.fps)
        except ValueError as e:
            raise BenchmarkError(str(e)) from None
    shown = suite.reported(models)
    subject = shown[0]
    keys = sorted({k for t in tasks for k in t.keys()}, key=features.key_str)
    index = {k: i for i, k in enumerate(keys)}
    cache = features.FeatureCache(ecfg.cache_dir, digest)
    feats = features.extract(store, keys, models, ecfg.batch_size, cache) if keys else {}
    real = suite.real_arrow_inputs(store, models, cache, ecfg) if REAL_TASK in ecfg.tasks else None
    t_feat = time.perf_counter() - t0
    print(f"probe_eval: features of {len(keys)} clips x {len(models)} models in {t_feat:.1f} s", flush=True)

    boot = VideoBootstrap([v.source_id for kind in (BENCHMARK, LABELLED) for v in store.videos_in("test", kind)],
                          ecfg.bootstrap, cfg.seed)
    held = [t for t in tasks if t.spec.kind == HELD_OUT]
    workers = ecfg.workers or os.cpu_count() or 1
    ceil = (trained_ceiling or supervised_ceiling(cfg, store, held, digest)) if held else None
    supervised = ceil.correct if ceil else {}
    # A task whose ceiling cannot learn it has no scale to measure a model on: it is reported, not averaged.
    # Decided on the ceiling's validation score (never on test).
    scaled = [t.name for t in held if ceil.val_accuracy[t.name] >= ecfg.headline_ceiling]
    t_ceiling = time.perf_counter() - t0 - t_feat

    rec = Record({"tasks": {}}, n_clips=len(keys))
    outcomes: dict[str, suite.Outcomes] = {}
    classified, arrows = suite.classify_all(tasks, feats, index, ecfg, cfg.seed, workers, real, subject)
    baselines = [m for m in shown if m in scores.BASELINES]
    for task in tasks:
        o, null = classified[task.name]
        outcomes[task.name] = o
        # gaps to every other model: the baselines and any external encoder
        rec.metrics["tasks"][task.name] = suite.score(o, boot, null, shown[1:], supervised.get(task.name),
                                                      ecfg.determinable if o.determinability is not None else None,
                                                      subject)
        if task.spec.scoring in PER_CLASS_SCORING:
            # drawn: the subject beside the bag of frames (a grid of every model's took longer to draw than
            # to score); a classification task's per-class table has every model's recall
            drawn = (subject, scores.FRAMES)
            counted = [m for m in o.predictions if task.spec.kind == CLASSIFICATION or m in drawn]
            matrices = {m: probes.confusion_matrix(o.labels, o.predictions[m], len(task.classes)) for m in counted}
            rec.confusions[task.name] = {m: matrices[m] for m in drawn if m in matrices}
            rec.classes[task.name] = task.classes
            if task.spec.kind == CLASSIFICATION:
                rec.metrics.setdefault(PER_CLASS, {})[task.name] = per_class(task.classes, matrices)
            if subject in o.predictions:
                rec.predicted[task.name] = report.confusion_rows(o.labels, o.predictions[subject], task.classes)
    diagnostics = [t for t in tasks if t.spec.kind == DIAGNOSTIC]
    if (diagnostics or held) and objective_path is not None:  # the objective's own readings, no probe
        from videossl.eval.objective_heads import load_objective

        objective, info = load_objective(objective_path)
        own = {**head_scores(objective, info, store, diagnostics, ecfg.speeds, ecfg.batch_size, boot),
               **surprise_scores(objective, store, held, ecfg.batch_size, boot)}
        for name, s in own.items():
            rec.metrics["tasks"][name].update(s)
    if real is not None:
        rec.metrics["tasks"][REAL_TASK] = {**suite.real_arrow(real, arrows, ecfg, cfg.seed),
                                           "pretrained_on_these_videos": int(real_pretrained)}
        rec.metrics["footage"] = suite.real_footage(store, cfg.ingest.fps)
    headline = suite.temporal_score(outcomes, supervised, boot, shown, baselines, scaled, subject)
    if headline:
        unscaled = [t.name for t in held if t.name not in scaled]
        headline["unscaled"] = ",".join(f"{t}={ceil.val_accuracy[t]:.3f}" for t in unscaled)
        headline["headline_ceiling"] = ecfg.headline_ceiling
        rec.metrics["tasks"] = {scores.HEADLINE: headline, **rec.metrics["tasks"]}
    t_probe = time.perf_counter() - t0 - t_feat - t_ceiling
    rec.timings = {"features": round(t_feat, 2), "ceiling": round(t_ceiling, 2), "probes": round(t_probe, 2),
                   "total": round(time.perf_counter() - t0, 2)}
    return rec
