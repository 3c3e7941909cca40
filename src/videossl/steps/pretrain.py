"""Pretrain step: the video encoder (and the frame-encoder baseline) through torchrun.

The step launches `torchrun --standalone` with `pretrain.nproc` processes on this machine; on a
cluster the same trainer module runs in every pod of a distributed job instead. Training checkpoints
go to `pretrain.checkpoint_dir` (default: OUT/checkpoints); run again after a crash and the trainer
resumes from the newest valid one of the same run (`pretrain.resume`).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from videossl import processes, stages
from videossl.config import Config, dump_config
from videossl.data.shards import ClipStore
from videossl.errors import StepError
from videossl.models.checkpoint import CHECKPOINTS, RECORD, encoder_shape, load_checkpoint, timings_path
from videossl.storage import write_text_atomic
from videossl.train.init_from import InitError, initial_weights
from videossl.train.loop import TrainingError, check_world




class PretrainError(StepError):
    pass


def torchrun_command(nproc: int, config: Path, data_dir: Path, out: Path,
                     variants: tuple[str, ...] = tuple(CHECKPOINTS)) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "videossl.train.main", "--config", str(config), "--data", str(data_dir), "--out", str(out),
            "--variants", *variants]


def pretrain(cfg: Config, data_dir: str | Path, out_dir: str | Path,
             variants: tuple[str, ...] = tuple(CHECKPOINTS)) -> dict:
    """Train `variants` (default: the video encoder and the frame-encoder baseline) into `out_dir`."""
    try:  # params that cannot work on this dataset fail here, before torchrun starts
        store = ClipStore(data_dir)
        check_world(cfg, cfg.pretrain.nproc, store)
        if cfg.pretrain.init_from and "video" in variants:  # readable, and this run's architecture
            initial_weights(cfg, encoder_shape(cfg.model, "video", store.clip_frames, store.size))
    except (TrainingError, InitError, ValueError, FileNotFoundError) as e:
        raise PretrainError(str(e)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with processes.run_lock(out):
            return _pretrain(cfg, Path(data_dir), out, variants)
    except processes.Busy as e:
        raise PretrainError(str(e)) from None


def _pretrain(cfg: Config, data_dir: Path, out: Path, variants: tuple[str, ...]) -> dict:
    config_path = write_text_atomic(out / "config.yaml", dump_config(cfg))
    for stale in (CHECKPOINTS[v] for v in variants):  # a failed run must not leave an older checkpoint looking current
        (out / stale).unlink(missing_ok=True)
    cmd = torchrun_command(cfg.pretrain.nproc, config_path, data_dir, out, variants)
    print(f"pretrain: {' '.join(cmd[2:])}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = processes.run_attached(cmd, env=env)  # killed with us, never left writing behind us
    if code != 0:
        done = [v for v, name in CHECKPOINTS.items() if (out / name).is_file()]
        raise PretrainError(f"pretraining failed (torchrun exit {code}; finished: {done or 'none'}); "
                            f"see the log above")
    results = {v: load_checkpoint(out / CHECKPOINTS[v])["result"] for v in variants}
    timings = {}
    for v in variants:  # what each trainer measured, beside its model
        path = Path(timings_path(out / CHECKPOINTS[v]))
        timings[v] = json.loads(path.read_text())
        path.unlink()
    summary = {"checkpoints": {v: CHECKPOINTS[v] for v in variants}, **results}
    write_text_atomic(out / RECORD, json.dumps(summary, indent=2) + "\n")
    stages.write_metrics(out, results, timings)
    return {**summary, **{v: {**results[v], **timings[v]} for v in variants}}
