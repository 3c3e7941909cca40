"""Datasets of the synthetic world written straight to clip shards (no codec, no ingest): the frames
the renderer made, in the layout ClipStore reads. For tests of the benchmark itself, where thousands
of clips are needed and the decode path is not what is tested."""
from __future__ import annotations

from pathlib import Path

from videossl.config import SyntheticConfig
from videossl.data import shards
from videossl.data import synthetic as S


def write_world(out: Path, cfg: SyntheticConfig, which: str = "benchmark", clip_frames: int = 8) -> Path:
    """Render every video of world `which` into `out` (shards + manifest, one row per video start)."""
    kind = shards.BENCHMARK if which == "benchmark" else shards.POOL
    writer = shards.ShardWriter(out, shard_frames=4096)
    rows = []
    for unit in S.plan(cfg, which):
        made = S.make_unit(unit, cfg, clip_frames)
        shard, offset = writer.add(made.frames)
        sid = f"synthetic/{which}/{unit.name}"
        rows.append({"clip_id": f"{sid}#0", "source_id": sid, "group": sid, "kind": kind, "split": unit.split,
                     "shard": shard, "offset": offset, "video_frames": len(made.frames), "start": 0,
                     "start_time": 0.0, "fps": cfg.fps, "shape": [clip_frames, cfg.size, cfg.size, 3],
                     "labels": made.labels, "digest": shards.clip_digest(made.frames[:clip_frames])})
    writer.flush()
    shards.write_manifest(out, rows)
    return out
