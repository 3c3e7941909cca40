"""A tiny but complete configuration: every step runs for real, in seconds, on 2 cores."""
from __future__ import annotations

from pathlib import Path

from videossl.config import Config, parse_config

REPO = Path(__file__).resolve().parents[1]

# 3 s synthetic videos at 12 fps give 36 frames: enough for an 8-frame window at 4x speed (29 frames).
TINY_OVERRIDES = [
    "ingest.sources=[synthetic]",
    "ingest.synthetic.videos=12",
    "ingest.synthetic.seconds=3.0",
    "ingest.synthetic.size=64",
    "ingest.size=32",
    "ingest.splits={train: 0.5, val: 0.17, test: 0.33}",
    "ingest.shard_frames=128",  # 3 videos a shard, 4 shards: room for 2-4 training processes (one shard each)
    "model.dim=32",
    "model.depth=1",
    "model.heads=2",
    "model.decoder_dim=32",
    "model.decoder_depth=1",
    "model.decoder_heads=2",
    "pretrain.steps=4",
    "pretrain.baseline_steps=4",
    "pretrain.batch_size=4",
    "pretrain.warmup_steps=1",
    "pretrain.log_every=2",
    "probe_eval.clips_per_video=2",
    "probe_eval.epochs=20",
    "probe_eval.attentive.epochs=5",
    # tiny data: no real videos (real_arrow_of_time has its own test) and too few single-shape videos
    "probe_eval.tasks=[arrow_of_time, speed, gravity, order, future_retrieval, content_count]",
]


def tracking_overrides(root: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{root}/mlruns.db", f"tracking.artifacts={root}/mlartifacts"]


def tiny_config(root: Path, *extra: str) -> Config:
    return parse_config((REPO / "params.yaml").read_text(), TINY_OVERRIDES + tracking_overrides(root) + list(extra))


def tiny_params_yaml(root: Path, *extra: str) -> str:
    from videossl.config import dump_config

    return dump_config(tiny_config(root, *extra))
