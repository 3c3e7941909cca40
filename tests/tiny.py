"""A tiny but complete configuration: every step runs for real, in seconds, on 2 cores."""
from __future__ import annotations

from pathlib import Path

from videossl.config import Config, parse_config

REPO = Path(__file__).resolve().parents[1]

# 4 s synthetic videos at 8 fps give 32 frames: enough for an 8-frame window at 4x speed (29 frames).
# The benchmark's bounce scenes have 3 videos in each of their 4 x 2 x 3 design cells (one per split);
# every probe family has 6 sets (2 per split).
TINY_OVERRIDES = [
    "ingest.sources=[synthetic]",
    "ingest.synthetic.benchmark.families={bounce: 72, permanence: 6, continuity: 6, shape_constancy: 6, future: 6, "
    "causality: 6, dye: 6, reversible: 6}",
    "ingest.synthetic.benchmark.splits={train: 0.34, val: 0.33, test: 0.33}",
    "ingest.synthetic.pool.families={bounce: 8, glide: 4, launch: 4}",
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
    "probe_eval.ceiling.windows=2",
    "probe_eval.headline_ceiling=0.0",  # 4 ceiling steps learn nothing: every held-out task is averaged anyway
    # tiny probes take less time than spawning a process pool; test_probe_eval's `evaluated` keeps the pool
    "probe_eval.workers=1",
    # one task of each kind: the pipeline tests test plumbing; tests/integration/test_probe_eval.py runs every
    # task (EVERY_TASK). Tiny data: no real videos (real_arrow_of_time has its own test)
    "probe_eval.tasks=[gravity_law, permanence, arrow_of_time, content_count, future_control]",
]


EVERY_TASK = ("probe_eval.tasks=[gravity_law, permanence, continuity, shape_constancy, future, causality, dye_arrow, "
              "arrow_of_time, speed, order, content_count, content_shape, reversible_arrow, future_control]")


def tracking_overrides(root: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{root}/mlruns.db", f"tracking.artifacts={root}/mlartifacts"]


def tiny_config(root: Path, *extra: str) -> Config:
    return parse_config((REPO / "params.yaml").read_text(), TINY_OVERRIDES + tracking_overrides(root) + list(extra))


def tiny_params_yaml(root: Path, *extra: str) -> str:
    from videossl.config import dump_config

    return dump_config(tiny_config(root, *extra))
