"""A tiny but complete configuration: every step runs for real, in seconds, on 2 cores."""
from __future__ import annotations

from pathlib import Path

from videossl.config import Config, parse_config

REPO = Path(__file__).resolve().parents[1]

# 4 s synthetic videos at 8 fps give 32 frames: enough for an 8-frame window at 4x speed (29 frames).
# The benchmark has 3 videos in each of its 4 x 2 x 3 design cells: one per split.
TINY_OVERRIDES = [
    "ingest.sources=[synthetic]",
    "ingest.synthetic.benchmark.videos=72",
    "ingest.synthetic.benchmark.splits={train: 0.34, val: 0.33, test: 0.33}",
    "ingest.synthetic.pool.videos=16",
    "ingest.synthetic.pool.val_fraction=0.125",
    "ingest.synthetic.seconds=4.0",
    "ingest.synthetic.max_objects=2",
    "ingest.synthetic.workers=1",
    "ingest.shard_frames=128",  # 4 pool videos a shard, 4 pool shards: room for 2-4 training processes
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
    "probe_eval.bootstrap=200",
    "probe_eval.null_permutations=50",
    "probe_eval.ceiling.steps=4",
    "probe_eval.ceiling.eval_every=2",
    "probe_eval.ceiling.width=4",
    # tiny probes take less time than spawning a process pool; test_probe_eval's `evaluated` keeps the pool
    "probe_eval.workers=1",
    # tiny data: no real videos (real_arrow_of_time has its own test)
    "probe_eval.tasks=[arrow_of_time, speed, gravity, order, future_retrieval, content_count, content_shape]",
]


def tracking_overrides(root: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{root}/mlruns.db", f"tracking.artifacts={root}/mlartifacts"]


def tiny_config(root: Path, *extra: str) -> Config:
    return parse_config((REPO / "params.yaml").read_text(), TINY_OVERRIDES + tracking_overrides(root) + list(extra))


def tiny_params_yaml(root: Path, *extra: str) -> str:
    from videossl.config import dump_config

    return dump_config(tiny_config(root, *extra))
