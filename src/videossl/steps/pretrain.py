"""Pretrain step: the video encoder (and the frame-encoder baseline) through torchrun.

The step launches `torchrun --standalone` with `pretrain.nproc` processes on this machine; on a
cluster the same trainer module runs in every pod of a distributed job instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from videossl.config import Config, dump_config
from videossl.models.checkpoint import load_checkpoint
from videossl.storage import write_text_atomic
from videossl.errors import StepError

CHECKPOINTS = {"video": "encoder.pt", "frames": "frame_encoder.pt"}


class PretrainError(StepError):
    pass


def torchrun_command(nproc: int, config: Path, data_dir: Path, out: Path, variant: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "videossl.train.main", "--config", str(config), "--data", str(data_dir),
            "--out", str(out), "--variant", variant]


def pretrain(cfg: Config, data_dir: str | Path, out_dir: str | Path) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = write_text_atomic(out / "config.yaml", dump_config(cfg))
    variants = ["video", "frames"]  # the bag-of-frames baseline is never optional
    results = {}
    for variant in variants:
        ckpt = out / CHECKPOINTS[variant]
        cmd = torchrun_command(cfg.pretrain.nproc, config_path, Path(data_dir), ckpt, variant)
        print(f"pretrain[{variant}]: {' '.join(cmd[2:])}", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            raise PretrainError(f"{variant} pretraining failed (torchrun exit {proc.returncode}); see the log above")
        results[variant] = load_checkpoint(ckpt)["result"]
    summary = {"checkpoints": {v: CHECKPOINTS[v] for v in variants}, **results}
    write_text_atomic(out / "pretrain.json", json.dumps(summary, indent=2) + "\n")
    return summary
