"""Probe-eval step: frozen features -> the temporal-understanding benchmark, beside the baselines.

Models, always in the same run: the pretrained video encoder, the bag-of-frames baseline (frame
encoder, mean-pooled), the video encoder at random initialisation, and raw pixels. Every distinct
clip is embedded once per model (and cached by model and dataset digest); probes train on training
videos, pick their hyperparameters on validation videos, and are scored once on test videos.

Writes to `out_dir`: metrics.json (DVC metrics), report.md, plots/{benchmark,probes,confusion,
time_vector}.png and plots/scores.json (DVC plot data). Logs the same to MLflow.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from videossl.config import Config
from videossl.data.shards import ClipStore, dataset_digest
from videossl.errors import StepError
from videossl.eval import features, probes, report, suite, time_vector
from videossl.eval.report import MODELS
from videossl.eval.tasks import RetrievalTask, Task, build_tasks, task_keys
from videossl.models.checkpoint import CHECKPOINTS, load_encoder
from videossl.models.vit import VideoViT
from videossl import storage
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
    torch.manual_seed(cfg.seed)
    random_init = VideoViT(video.shape)
    return [
        features.encoder_model("video", video, storage.file_md5(video_path), cells),
        features.encoder_model("frames", frame_encoder, storage.file_md5(frames_path), cells),
        features.encoder_model("random_init", random_init, f"random-init|{video.shape}|seed={cfg.seed}", cells),
        features.pixel_model(cells),
    ]


def _check(tasks: list[Task | RetrievalTask]) -> None:
    for task in tasks:
        items = task.items if isinstance(task, Task) else task.pairs
        for split in ("train", "test"):
            if not items[split]:
                raise ProbeEvalError(f"probe_eval.tasks: {task.name} has no labelled clips in the {split} split; "
                                     f"ingest more synthetic videos (ingest.synthetic.videos) or check ingest.splits")


def probe_eval(cfg: Config, data_dir: str | Path, model_dir: str | Path, out_dir: str | Path) -> dict:
    ecfg = cfg.probe_eval
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = ClipStore(data_dir)
    digest = dataset_digest(data_dir)
    synthetic = [n for n in ecfg.tasks if n != REAL_TASK]
    tasks = build_tasks(store, synthetic, ecfg.speeds, ecfg.clips_per_video, ecfg.future_offset,
                        cfg.ingest.synthetic.max_objects)
    _check(tasks)
    models = feature_models(cfg, Path(model_dir))
    keys = sorted({k for t in tasks for k in task_keys(t)}, key=features.key_str)
    index = {k: i for i, k in enumerate(keys)}
    cache = features.FeatureCache(ecfg.cache_dir, digest)
    feats = features.extract(store, keys, models, ecfg.batch_size, cache)
    t_feat = time.perf_counter() - t0

    metrics: dict = {"tasks": {}}
    confusions, classes = {}, {}
    for task in tasks:
        if isinstance(task, RetrievalTask):
            metrics["tasks"][task.name] = suite.retrieve(task, feats, index, ecfg)
            continue
        scores, predictions = suite.classify(task, feats, index, ecfg, cfg.seed)
        metrics["tasks"][task.name] = scores
        labels = predictions.pop("_labels")
        confusions[task.name] = {m: probes.confusion_matrix(labels, p, len(task.classes)) for m, p in predictions.items()}
        classes[task.name] = task.classes
    projections = {}
    arrow = next((t for t in tasks if t.name == "arrow_of_time"), None)
    if arrow is not None:
        metrics["tasks"]["time_vector"], projections = suite.time_vector_scores(arrow, feats, index)
    if REAL_TASK in ecfg.tasks:
        if len({v.group for v in store.videos_in(kind="real")}) < 2:
            raise ProbeEvalError(f"probe_eval.tasks: {REAL_TASK} needs real videos from at least 2 footage groups "
                                 f"(ingest.sources: samples, a local folder or s3://); drop it from the tasks "
                                 f"for synthetic-only data")
        metrics["tasks"][REAL_TASK] = suite.real_arrow(store, models, cache, ecfg)
    t_probe = time.perf_counter() - t0 - t_feat

    flat = {**metrics["tasks"], "dataset_digest": digest, "clips_embedded": len(keys),
            "seconds": {"features": round(t_feat, 2), "probes": round(t_probe, 2),
                        "total": round(time.perf_counter() - t0, 2)}}
    _write_outputs(out, metrics, flat, confusions, classes, projections, digest, len(keys))
    _log_to_mlflow(cfg, flat, out)
    print(report.console_table(metrics, MODELS))
    print(f"probe_eval: {len(keys)} clips x {len(models)} models; features {t_feat:.1f} s, probes {t_probe:.1f} s")
    return flat


def _write_outputs(out: Path, metrics: dict, flat: dict, confusions: dict, classes: dict, projections: dict,
                   digest: str, n_clips: int) -> None:
    plots = out / "plots"
    # DVC reads metrics.json; flat task keys (arrow_of_time.video) stay stable for the registry gate.
    write_text_atomic(out / "metrics.json", json.dumps(flat, indent=2) + "\n")
    write_text_atomic(plots / "scores.json", json.dumps(report.plot_rows(metrics, MODELS), indent=1) + "\n")
    report.bar_plot(metrics, MODELS, plots / "benchmark.png", "Linear probes on frozen features (dashed: chance)")
    if confusions:
        report.confusion_plot(confusions, classes, plots / "confusion.png")
    if projections:
        report.time_vector_plot(projections, plots / "time_vector.png")
    sections = [f"# Temporal-understanding benchmark\n\nDataset `{digest[:12]}`, {n_clips} synthetic clips embedded "
                f"per model. Scores on held-out videos with 95% Wilson intervals; the gap columns are the video "
                f"model minus each baseline.\n",
                "## Linear probe (primary)\n\n" + report.markdown_table(metrics, MODELS),
                "![benchmark](plots/benchmark.png)"]
    for suffix, title in (("_attentive", "Attentive probe"), ("_knn", "kNN (cosine)"),
                          ("_predictor", "Future-clip retrieval through a learned linear predictor (R@1)"),
                          ("_r5", "Retrieval R@5 (cosine; chance is 5 / n test)"),
                          ("_within_video", "Retrieval R@1 among the same video's future clips only (cosine)"),
                          ("_no_control", "Real-video arrow of time WITHOUT the codec control (the shortcut left in)")):
        table = report.markdown_table(metrics, MODELS, suffix)
        if table.count("\n") > 1:
            sections.append(f"## {title}\n\n{table}")
    if confusions:
        sections.append("## Confusion matrices (linear probe, test videos)\n\n![confusion](plots/confusion.png)")
    if projections:
        sections.append("## Time vector\n\nThe mean forward-minus-reversed direction of training clips; the "
                        "`time_vector` row scores the sign of test clips' projections.\n\n"
                        "![time vector](plots/time_vector.png)")
    write_text_atomic(out / "report.md", "\n\n".join(sections) + "\n")


def _log_to_mlflow(cfg: Config, flat: dict, out: Path) -> None:
    import mlflow

    from videossl import tracking

    with tracking.run(cfg.tracking, "probe-eval", tags={"step": "probe_eval"}):
        mlflow.log_params(tracking.flat_params(cfg.probe_eval.model_dump(mode="json"), "probe_eval."))
        mlflow.log_metrics(tracking.flatten({t: s for t, s in flat.items() if isinstance(s, dict) and "n_test" in s},
                                            leaf=lambda v: isinstance(v, (int, float))))
        mlflow.log_artifact(str(out / "metrics.json"))
        mlflow.log_artifact(str(out / "report.md"))
        mlflow.log_artifacts(str(out / "plots"), artifact_path="plots")
