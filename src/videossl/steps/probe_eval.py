"""Probe-eval step: frozen features -> linear probes on temporal tasks, beside the baselines.

Models, always in the same run: the pretrained video encoder, the bag-of-frames baseline (frame
encoder, mean-pooled), the video encoder at random initialisation, and raw pixels. Probes train on
train videos, pick regularisation on val videos, and are scored on test videos.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from videossl.config import Config
from videossl.data.shards import ClipStore
from videossl.eval import features, report
from videossl.eval.report import MODELS
from videossl.eval.probes import linear_probe
from videossl.eval.tasks import build_tasks
from videossl.models.checkpoint import load_encoder
from videossl.models.vit import VideoViT
from videossl.models.checkpoint import CHECKPOINTS
from videossl.storage import write_text_atomic
from videossl.errors import StepError


class ProbeEvalError(StepError):
    pass


def _featurizers(cfg: Config, model_dir: Path) -> dict:
    video, _ = load_encoder(model_dir / CHECKPOINTS["video"])
    frames_path = model_dir / CHECKPOINTS["frames"]
    if not frames_path.is_file():
        raise ProbeEvalError(f"{frames_path} missing: the bag-of-frames baseline is part of every benchmark")
    frame_encoder, _ = load_encoder(frames_path)
    torch.manual_seed(cfg.seed)
    random_init = VideoViT(video.shape).eval()
    clip_models = {"video": features.video_featurizer(video), "random_init": features.video_featurizer(random_init),
                   "pixels": features.pixel_featurizer}
    return clip_models, frame_encoder


def probe_eval(cfg: Config, data_dir: str | Path, model_dir: str | Path, out_dir: str | Path) -> dict:
    ecfg = cfg.probe_eval
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = ClipStore(data_dir)
    tasks = build_tasks(store, ecfg.tasks, ecfg.speeds, ecfg.clips_per_video)
    for task in tasks:
        if not task.items["train"] or not task.items["test"]:
            raise ProbeEvalError(f"task {task.name}: no labelled clips in the "
                                 f"{'train' if not task.items['train'] else 'test'} split; "
                                 f"ingest more synthetic videos (ingest.synthetic.videos) or check ingest.splits")
    keys = sorted({k for t in tasks for items in t.items.values() for k, _ in items},
                  key=lambda k: (k.video, k.start, k.step, k.reversed))
    index = {k: i for i, k in enumerate(keys)}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    clip_models, frame_encoder = _featurizers(cfg, Path(model_dir))
    feats = features.extract(store, keys, clip_models, ecfg.batch_size)
    feats["frames"] = features.frame_features(store, keys, frame_encoder, ecfg.batch_size * store.clip_frames)
    t_feat = time.perf_counter() - t0

    metrics: dict = {"tasks": {}}
    for task in tasks:
        split = {s: (np.array([index[k] for k, _ in task.items[s]], dtype=np.int64),
                     np.array([y for _, y in task.items[s]], dtype=np.int64)) for s in ("train", "val", "test")}
        val_idx, val_y = split["val"]
        if len(val_y) == 0:  # no validation videos (tiny runs): hold out every 4th training item instead
            tr_idx, tr_y = split["train"]
            hold = np.arange(len(tr_y)) % 4 == 3
            split["train"], split["val"] = (tr_idx[~hold], tr_y[~hold]), (tr_idx[hold], tr_y[hold])
        scores = {"n_test": int(len(split["test"][1])), "chance": round(1.0 / len(task.classes), 4)}
        for name in MODELS:
            f = feats[name]
            s = linear_probe(*((f[i], y) for i, y in (split["train"], split["val"], split["test"])),
                             classes=len(task.classes), l2_grid=ecfg.l2_grid, iters=ecfg.epochs)
            scores.update({name: round(s.accuracy, 4), f"{name}_ci_low": round(s.ci_low, 4),
                           f"{name}_ci_high": round(s.ci_high, 4), f"{name}_l2": s.l2})
        metrics["tasks"][task.name] = scores
    metrics["dataset_digest"] = json.loads((Path(data_dir) / "ingest.json").read_text()).get("digest", "unknown")
    metrics["seconds"] = {"features": round(t_feat, 2), "total": round(time.perf_counter() - t0, 2)}
    metrics["clips_embedded"] = len(keys)

    # DVC reads metrics.json; flat task keys (arrow_of_time.video) stay stable for the registry gate.
    flat = {**{t: s for t, s in metrics["tasks"].items()}, "dataset_digest": metrics["dataset_digest"],
            "seconds": metrics["seconds"], "clips_embedded": len(keys)}
    write_text_atomic(out / "metrics.json", json.dumps(flat, indent=2) + "\n")
    report.bar_plot(metrics, MODELS, out / "plots" / "benchmark.png")
    table = report.markdown_table(metrics, MODELS)
    write_text_atomic(out / "report.md", f"# Temporal-understanding benchmark\n\nDataset `{metrics['dataset_digest'][:12]}`, "
                      f"{len(keys)} clips embedded per model. Accuracy on held-out videos with 95% Wilson intervals.\n\n"
                      f"{table}\n\n![benchmark](plots/benchmark.png)\n")
    _log_to_mlflow(cfg, flat, out)
    print(report.console_table(metrics, MODELS))
    print(f"probe_eval: {len(keys)} clips x {len(MODELS)} models in {metrics['seconds']['total']:.1f} s")
    return flat


def _log_to_mlflow(cfg: Config, flat: dict, out: Path) -> None:
    import mlflow

    from videossl import tracking

    with tracking.run(cfg.tracking, "probe-eval", tags={"step": "probe_eval"}):
        mlflow.log_params(tracking.flat_params(cfg.probe_eval.model_dump(mode="json"), "probe_eval."))
        mlflow.log_metrics(tracking.flatten({t: s for t, s in flat.items() if t in cfg.probe_eval.tasks},
                                            leaf=lambda v: isinstance(v, (int, float))))
        mlflow.log_artifact(str(out / "metrics.json"))
        mlflow.log_artifact(str(out / "report.md"))
        mlflow.log_artifacts(str(out / "plots"), artifact_path="plots")
