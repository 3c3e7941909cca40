"""Probe-eval step: the I/O around the benchmark (eval/benchmark.py): which models, and where results go.

Models, always in the same run: the pretrained video encoder, the bag-of-frames baseline (frame
encoder, mean-pooled), ordered frames (the frame encoder's features in time order: an image model
with a temporal probe), the video encoder at random initialisation (several seeds), raw pixels and
non-learned motion statistics (eval/motion.py); eval/benchmark.py adds the objective's own heads, and
the supervised ceiling: the ceiling step's record (steps/ceiling.py) when `ceiling_dir` is given,
else trained here (and cached in probe_eval.cache_dir).

Writes to `out_dir`: scores.json (every score: eval/scores.py), metrics.json (its headline, DVC
metrics), timings.json (not committed), report.md, plots/{benchmark,confusion}.png, and
the DVC plot data: plots/tasks/<task>.json (each model's score) and plots/confusion/<task>.json (the
video model's test predictions). Logs the same to MLflow.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from videossl import stages
from videossl.steps import ceiling
from videossl.config import Config
from videossl.data.shards import ClipStore, dataset_digest
from videossl.errors import StepError
from videossl.eval import benchmark, features, report, scores, suite
from videossl.eval.motion import motion_model
from videossl.eval.tasks import CLASSIFICATION, HELD_OUT, of_kind
from videossl.models.checkpoint import CHECKPOINTS, CheckpointError, check_recorded, load_encoder, state_digest
from videossl.models.vit import VideoViT
from videossl.storage import write_text_atomic


class ProbeEvalError(StepError):
    pass


def feature_models(cfg: Config, model_dir: Path) -> tuple[list[features.FeatureModel], bool, dict[str, str]]:
    """videossl's models (the video model, its frame encoder's two readings, random init), whether the
    video model was pretrained on real footage, and the digest of the weights of each checkpoint scored
    (scores.SCORED_WEIGHTS: register refuses scores of other weights)."""
    cells = cfg.probe_eval.pool_grid
    video_path, frames_path = model_dir / CHECKPOINTS["video"], model_dir / CHECKPOINTS["frames"]
    if not frames_path.is_file():
        raise ProbeEvalError(f"{frames_path} missing: the bag-of-frames baseline is part of every benchmark")
    video, meta = load_encoder(video_path)
    frame_encoder, _ = load_encoder(frames_path)
    # features are cached by the weights, not the file: equal weights are equal features
    video_digest, frames_digest = state_digest(video.state_dict()), state_digest(frame_encoder.state_dict())
    try:  # the weights pretraining recorded beside them (pretrain.json), not a file swapped since
        check_recorded(video_path, video_digest)
        check_recorded(frames_path, frames_digest)
    except CheckpointError as e:
        raise ProbeEvalError(str(e)) from None
    models = [
        features.encoder_model(scores.VIDEO, video, video_digest, cells),
        features.encoder_model(scores.FRAMES, frame_encoder, frames_digest, cells, features.MEAN_FRAMES),
        features.encoder_model(scores.ORDERED_FRAMES, frame_encoder, frames_digest, cells, features.ORDERED_FRAMES),
    ]
    for i in range(cfg.probe_eval.random_init_seeds):
        torch.manual_seed(cfg.seed + i)
        models.append(features.encoder_model(f"{scores.RANDOM_INIT}_{i}", VideoViT(video.shape),
                                              f"random-init|{video.shape}|seed={cfg.seed + i}", cells))
    return models, bool(meta["config"]["pretrain"].get("real_footage")), {"video": video_digest, "frames": frames_digest}


def probe_eval(cfg: Config, data_dir: str | Path, model_dir: str | Path | None, out_dir: str | Path,
               encoders: list[str] = (), ceiling_dir: str | Path | None = None) -> dict:
    """The benchmark of the encoder in `model_dir` beside its baselines; `encoders` (specs of
    videossl.eval.external, `videossl evaluate --encoder`) join as further columns of every table.
    With no `model_dir`, the first encoder is the subject and its own bag of frames, ordered frames
    and random initialisation are its baselines (eval/external.subject_baselines).
    `ceiling_dir`: the ceiling step's output (None: the ceiling is trained here)."""
    if model_dir is None and not encoders:
        raise ProbeEvalError("nothing to evaluate: give videossl's models (--models) or an encoder (--encoder)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    store = ClipStore(data_dir)
    digest = dataset_digest(data_dir)
    trained_ceiling = ceiling.read(cfg, store, digest, ceiling_dir) if ceiling_dir is not None else None
    models, real_pretrained, weights = feature_models(cfg, Path(model_dir)) if model_dir is not None else ([], False, {})
    if encoders:
        from videossl.eval.external import external_models

        alone = (None if models else
                 ([cfg.seed + i for i in range(cfg.probe_eval.random_init_seeds)],
                  (scores.FRAMES, scores.ORDERED_FRAMES, scores.RANDOM_INIT)))
        models += external_models(list(encoders), cfg.ingest.clip_frames, cfg.ingest.size, cfg.probe_eval.pool_grid,
                                  baselines=alone)
    models += [features.pixel_model(cfg.probe_eval.pool_grid), motion_model()]  # the non-learned baselines
    try:
        rec = benchmark.run(cfg, store, models, digest,
                            Path(model_dir) / CHECKPOINTS["video"] if model_dir is not None else None,
                            real_pretrained, trained_ceiling)
    except benchmark.BenchmarkError as e:
        raise ProbeEvalError(str(e)) from None
    shown = suite.reported(models)
    flat = {**rec.metrics["tasks"], **{k: rec.metrics[k] for k in ("footage", scores.PER_CLASS) if k in rec.metrics},
            "dataset_digest": digest, scores.SCORED_WEIGHTS: weights, "clips_embedded": rec.n_clips}
    _write_outputs(out, rec, flat, digest, shown)
    stages.write_metrics(out, scores.headline(flat, of_kind(HELD_OUT, cfg.probe_eval.tasks)
                                              + of_kind(CLASSIFICATION, cfg.probe_eval.tasks), shown[0]), rec.timings)
    _log_to_mlflow(cfg, flat, out, started, (str(data_dir), digest))
    print(report.console_table(rec.metrics, shown))
    t = rec.timings
    print(f"probe_eval: {rec.n_clips} clips x {len(models)} models; features {t['features']:.1f} s, ceiling "
          f"{t['ceiling']:.1f} s, probes {t['probes']:.1f} s; wrote {out}")
    return {**flat, "seconds": rec.timings}


def _write_outputs(out: Path, rec: benchmark.Record, flat: dict, digest: str, shown: list[str]) -> None:
    plots = out / scores.PLOTS
    write_text_atomic(out / scores.SCORES, json.dumps(flat, indent=2) + "\n")
    # DVC plots, one per question: each task's scores by model, and the video model's confusion matrices
    for folder, per_task in ((scores.TASK_PLOTS, report.task_plot_rows(rec.metrics, shown)),
                             (scores.CONFUSION_PLOTS, rec.predicted)):
        for task, rows in per_task.items():
            write_text_atomic(plots / folder / f"{task}.json", json.dumps(rows, indent=1) + "\n")
    report.bar_plot(rec.metrics, shown, plots / "benchmark.png")
    if rec.confusions:
        report.confusion_plot(rec.confusions, rec.classes, plots / "confusion.png")
    write_text_atomic(out / scores.REPORT, report.markdown_report(rec.metrics, shown, digest, rec.n_clips,
                                                                bool(rec.confusions)))


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
