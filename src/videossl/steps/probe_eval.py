"""Probe-eval step: frozen features -> the temporal-understanding benchmark, beside the baselines.

Models, always in the same run: the pretrained video encoder, the bag-of-frames baseline (frame
encoder, mean-pooled), ordered frames (the frame encoder's features in time order: an image model
with a temporal probe), the video encoder at random initialisation (several seeds), raw pixels, and
per temporal task the supervised ceiling (eval/ceiling.py). Every distinct clip is embedded once
per model (and cached by model and dataset digest); probes train on training videos, pick their
hyperparameters on validation videos, and are scored once on test videos. Intervals resample test
videos; the chance column is each task's label-permutation null.

Writes to `out_dir`: scores.json (every score: eval/scores.py), metrics.json (its headline, DVC
metrics), timings.json (not committed), report.md, plots/{benchmark,confusion,time_vector}.png, and
the DVC plot data: plots/tasks/<task>.json (each model's score) and plots/confusion/<task>.json (the
video model's test predictions). Logs the same to MLflow.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from videossl import stages
from videossl.config import Config
from videossl.data.shards import BENCHMARK, ClipStore, dataset_digest
from videossl.errors import StepError
from videossl.eval import ceiling, features, probes, report, scores, suite
from videossl.eval.report import MODELS
from videossl.eval.stats import VideoBootstrap
from videossl.eval.tasks import TEMPORAL, RetrievalTask, Task, build_tasks, task_keys
from videossl.models.checkpoint import CHECKPOINTS, load_encoder, state_digest
from videossl.models.vit import VideoViT
from videossl.storage import write_text_atomic

REAL_TASK = "real_arrow_of_time"


class ProbeEvalError(StepError):
    pass


def feature_models(cfg: Config, model_dir: Path) -> list[features.FeatureModel]:
    cells = cfg.probe_eval.pool_grid
    video_path, frames_path = model_dir / CHECKPOINTS["video"], model_dir / CHECKPOINTS["frames"]
    if not frames_path.is_file():
        raise ProbeEvalError(f"{frames_path} missing: the bag-of-frames baseline is part of every benchmark")
    video, _ = load_encoder(video_path)
    frame_encoder, _ = load_encoder(frames_path)
    # features are cached by the weights, not the file: equal weights are equal features
    frames_digest = state_digest(frame_encoder.state_dict())
    models = [
        features.encoder_model("video", video, state_digest(video.state_dict()), cells),
        features.encoder_model("frames", frame_encoder, frames_digest, cells, features.MEAN_FRAMES),
        features.encoder_model("ordered_frames", frame_encoder, frames_digest, cells, features.ORDERED_FRAMES),
    ]
    for i in range(cfg.probe_eval.random_init_seeds):
        torch.manual_seed(cfg.seed + i)
        models.append(features.encoder_model(f"{suite.RANDOM_INIT}_{i}", VideoViT(video.shape),
                                              f"random-init|{video.shape}|seed={cfg.seed + i}", cells))
    return models + [features.pixel_model(cells)]


def _check(tasks: list[Task | RetrievalTask]) -> None:
    for task in tasks:
        items = task.items if isinstance(task, Task) else task.pairs
        for split in ("train", "test"):
            if not items[split]:
                raise ProbeEvalError(f"probe_eval.tasks: {task.name} has no labelled clips in the {split} split; "
                                     f"ingest the synthetic benchmark (ingest.synthetic.benchmark.videos) or drop "
                                     f"the synthetic tasks from probe_eval.tasks")


def probe_eval(cfg: Config, data_dir: str | Path, model_dir: str | Path, out_dir: str | Path,
               encoders: list[str] = ()) -> dict:
    """The benchmark of the encoder in `model_dir` beside its baselines; `encoders` (specs of
    videossl.eval.external, `videossl evaluate --encoder`) join as further columns of every table."""
    ecfg = cfg.probe_eval
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0, started = time.perf_counter(), time.time()
    store = ClipStore(data_dir)
    digest = dataset_digest(data_dir)
    synthetic = [n for n in ecfg.tasks if n != REAL_TASK]
    tasks = build_tasks(store, synthetic, ecfg.speeds, ecfg.clips_per_video, ecfg.future_offset,
                        cfg.ingest.synthetic.max_objects, cfg.seed) if synthetic else []
    _check(tasks)
    models = feature_models(cfg, Path(model_dir))
    if encoders:
        from videossl.eval.external import external_models

        models += external_models(list(encoders), cfg.ingest.clip_frames, cfg.ingest.size, ecfg.pool_grid)
    shown = MODELS + [m.name for m in models if m.name not in MODELS and suite.model_group(m.name) == m.name]
    keys = sorted({k for t in tasks for k in task_keys(t)}, key=features.key_str)
    index = {k: i for i, k in enumerate(keys)}
    cache = features.FeatureCache(ecfg.cache_dir, digest)
    feats = features.extract(store, keys, models, ecfg.batch_size, cache) if keys else {}
    t_feat = time.perf_counter() - t0
    print(f"probe_eval: features of {len(keys)} clips x {len(models)} models in {t_feat:.1f} s", flush=True)

    boot = VideoBootstrap([v.source_id for v in store.videos_in("test", BENCHMARK)], ecfg.bootstrap, cfg.seed)
    temporal = [t for t in tasks if isinstance(t, Task) and t.name in TEMPORAL]
    supervised = {}
    if temporal:
        ceil = ceiling.ceiling(store, temporal, ecfg.speeds, ecfg.ceiling, cfg.seed, digest, ecfg.cache_dir)
        supervised = ceil.correct
    t_ceiling = time.perf_counter() - t0 - t_feat

    metrics: dict = {"tasks": {}}
    outcomes: dict[str, suite.Outcomes] = {}
    confusions, classes, predicted = {}, {}, {}
    classified = suite.classify_all([t for t in tasks if isinstance(t, Task)], feats, index, ecfg, cfg.seed,
                                    ecfg.workers or os.cpu_count() or 1)
    for task in tasks:
        if isinstance(task, RetrievalTask):
            metrics["tasks"][task.name] = suite.retrieve(task, feats, index, ecfg, boot)
            continue
        o, null = classified[task.name]
        outcomes[task.name] = o
        metrics["tasks"][task.name] = suite.score(o, boot, null, shown[1:], supervised.get(task.name),
                                                  ecfg.determinable if task.determinability else None)
        confusions[task.name] = {m: probes.confusion_matrix(o.labels, p, len(task.classes)) for m, p in o.predictions.items()}
        classes[task.name] = task.classes
        if scores.VIDEO in o.predictions:
            predicted[task.name] = report.confusion_rows(o.labels, o.predictions[scores.VIDEO], task.classes)
    projections = {}
    arrow = next((t for t in tasks if t.name == "arrow_of_time"), None)
    if arrow is not None:
        metrics["tasks"]["time_vector"], projections = suite.time_vector_scores(arrow, feats, index, boot)
    if REAL_TASK in ecfg.tasks:
        if len({v.group for v in store.videos_in(kind="real")}) < 2:
            raise ProbeEvalError(f"probe_eval.tasks: {REAL_TASK} needs real videos from at least 2 footage groups "
                                 f"(ingest.sources: samples, a local folder or s3://); drop it from the tasks "
                                 f"for synthetic-only data")
        metrics["tasks"][REAL_TASK] = suite.real_arrow(store, models, cache, ecfg, cfg.seed)
        metrics["footage"] = suite.real_footage(store, cfg.ingest.fps)
    headline = suite.temporal_score(outcomes, supervised, boot, shown, list(TEMPORAL))
    if headline:
        metrics["tasks"] = {scores.HEADLINE: headline, **metrics["tasks"]}
    t_probe = time.perf_counter() - t0 - t_feat - t_ceiling

    flat = {**metrics["tasks"], **({"footage": metrics["footage"]} if "footage" in metrics else {}),
            "dataset_digest": digest, "clips_embedded": len(keys)}
    timings = {"features": round(t_feat, 2), "ceiling": round(t_ceiling, 2), "probes": round(t_probe, 2),
               "total": round(time.perf_counter() - t0, 2)}
    _write_outputs(out, metrics, flat, confusions, classes, predicted, projections, digest, len(keys), shown)
    stages.write_metrics(out, scores.headline(flat), timings)
    _log_to_mlflow(cfg, flat, out, started, (str(data_dir), digest))
    print(report.console_table(metrics, shown))
    print(f"probe_eval: {len(keys)} clips x {len(models)} models; features {t_feat:.1f} s, ceiling "
          f"{t_ceiling:.1f} s, probes {t_probe:.1f} s")
    return {**flat, "seconds": timings}


def _write_outputs(out: Path, metrics: dict, flat: dict, confusions: dict, classes: dict, predicted: dict,
                   projections: dict, digest: str, n_clips: int, shown: list[str]) -> None:
    plots = out / scores.PLOTS
    write_text_atomic(out / scores.SCORES, json.dumps(flat, indent=2) + "\n")
    # DVC plots, one per question: each task's scores by model, and the video model's confusion matrices
    for folder, per_task in ((scores.TASK_PLOTS, report.task_plot_rows(metrics, shown)),
                             (scores.CONFUSION_PLOTS, predicted)):
        for task, rows in per_task.items():
            write_text_atomic(plots / folder / f"{task}.json", json.dumps(rows, indent=1) + "\n")
    report.bar_plot(metrics, shown, plots / "benchmark.png", "Linear probes on frozen features (dashed: chance)")
    if confusions:
        report.confusion_plot(confusions, classes, plots / "confusion.png")
    if projections:
        report.time_vector_plot(projections, plots / "time_vector.png")
    write_text_atomic(out / scores.REPORT, report.markdown_report(metrics, shown, digest, n_clips,
                                                                bool(confusions), bool(projections)))


def _log_to_mlflow(cfg: Config, flat: dict, out: Path, started: float, dataset: tuple[str, str]) -> None:
    import mlflow

    from videossl import tracking

    with tracking.run(cfg.tracking, "probe-eval", tags={"step": "probe_eval"}, started=started, dataset=dataset):
        mlflow.log_params(tracking.flat_params(cfg.probe_eval.model_dump(mode="json"), "probe_eval."))
        mlflow.log_metrics(tracking.flatten({t: s for t, s in flat.items() if isinstance(s, dict) and "n_test_videos" in s},
                                            leaf=lambda v: isinstance(v, (int, float))))
        for name in (scores.SCORES, stages.METRICS, scores.REPORT):
            mlflow.log_artifact(str(out / name))
        mlflow.log_artifacts(str(out / scores.PLOTS), artifact_path=scores.PLOTS)
