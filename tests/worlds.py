"""Datasets of the synthetic world written straight to clip shards (no codec, no ingest): the frames
the renderer made, in the layout ClipStore reads. For tests of the benchmark itself, where thousands
of videos are needed and the decode path is not what is tested."""
from __future__ import annotations

from pathlib import Path

from videossl.config import SyntheticConfig
from videossl.data import shards
from videossl.data import synthetic as S


def write_world(out: Path, cfg: SyntheticConfig, which: str = "benchmark", clip_frames: int = 8) -> Path:
    """Render every video of world `which` into `out` (shards + manifest, one row per video start)."""
    plans = S.benchmark_plan(cfg) if which == "benchmark" else S.pool_plan(cfg)
    kind = shards.BENCHMARK if which == "benchmark" else shards.POOL
    writer = shards.ShardWriter(out, shard_frames=4096)
    rows = []
    for p in plans:
        world = S.sample_world(p.seed, cfg, p.gravity, p.n_objects, p.shape)
        traj = S.simulate_world(world, cfg)
        frames = S.render(world, traj, cfg.size)
        shard, offset = writer.add(frames)
        sid = f"synthetic/{which}/{p.index:05d}"
        rows.append({"clip_id": f"{sid}#0", "source_id": sid, "group": sid, "kind": kind, "split": p.split,
                     "shard": shard, "offset": offset, "video_frames": len(frames), "start": 0,
                     "start_time": 0.0, "fps": cfg.fps, "shape": [clip_frames, cfg.size, cfg.size, 3],
                     "labels": S.labels_for(world, traj, cfg, p.split), "digest": shards.clip_digest(frames[:clip_frames])})
    writer.flush()
    shards.write_manifest(out, rows)
    return out
