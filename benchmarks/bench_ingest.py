"""Partitioned ingest: throughput with 1 and 2 partitions on one synthetic corpus, the same digest,
and a projection to Kinetics-400 scale from a decode rate measured on 720p files.

1. A corpus of `--videos` synthetic videos (the pool world, `--size` px, 2 s at 24 fps), rendered
   once into `--corpus` (not timed).
2. `videossl ingest` of that folder as one partition with one decode process; as two partitions
   side by side (`--partition 0/2`, `--partition 1/2`, one decode process each, then `--merge`);
   and as one partition with two decode processes (the default on 2 cores). Wall time each, as the
   subprocesses a user or a pod runs; the three datasets' digests must agree.
3. The decode rate of one process on 720p H.264 (source frames/s, straight to `--size` px), and from it
   the wall time of 240k ten-second 25 fps videos (60 M source frames, Kinetics-400) on N pods, each
   pod one partition with the 2-partition efficiency measured in 2.

    .venv/bin/python benchmarks/bench_ingest.py [--videos 2000] [--size 112] [--corpus DIR]

Prints tables; never asserts a timing.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import machine, now, table, write_json
from videossl.config import SyntheticConfig, parse_config, dump_config

KINETICS = {"videos": 240_000, "seconds": 10, "fps": 25}  # Kinetics-400, roughly: ten-second clips at 25 fps
CHUNKS_PER_PARTITION = 10  # chunk_videos is set so each partition gets this many chunks


def render(corpus: Path, videos: int, size: int) -> Path:
    from videossl.data import synthetic

    cfg = SyntheticConfig.model_validate({"size": size, "seconds": 2, "fps": 24, "workers": 0,
                                          "pool": {"families": {"bounce": videos}},
                                          "benchmark": {"families": {}}})
    synthetic.generate(cfg, "pool", corpus, 8)
    return corpus


def params(corpus: Path, size: int, workers: int, chunk_videos: int) -> str:
    cfg = parse_config("{}", [f"ingest.sources=[{corpus}]", f"ingest.size={size}", f"ingest.workers={workers}",
                              f"ingest.chunk_videos={chunk_videos}", "ingest.synthetic.benchmark.families={}",
                              "ingest.synthetic.pool.families={}"])
    return dump_config(cfg)


def videossl(params_file: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "videossl.cli", "ingest", "--params", str(params_file), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*procs: subprocess.Popen) -> None:
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"ingest failed:\n{out[-2000:]}\n{err[-2000:]}")


def run_config(work: Path, corpus: Path, size: int, partitions: int, workers: int, chunk: int) -> dict:
    folder = work / f"p{partitions}-w{workers}"
    pfile = folder.with_suffix(".yaml")
    pfile.write_text(params(corpus, size, workers, chunk))
    t0 = time.perf_counter()
    if partitions == 1:
        finish(videossl(pfile, "--out", str(folder)))
    else:
        finish(*[videossl(pfile, "--partition", f"{i}/{partitions}", "--out", str(work / "parts"))
                 for i in range(partitions)])
        finish(videossl(pfile, "--merge", str(work / "parts"), "--out", str(folder)))
    wall = time.perf_counter() - t0
    stats = json.loads((folder / "ingest.json").read_text())
    return {"partitions": partitions, "workers": workers, "wall_s": wall, "videos": stats["videos"],
            "frames": stats["frames"], "digest": stats["digest"]}


def decode_rate_720p(work: Path, size: int, n: int, frames_per_file: int = 96) -> float:
    """Source frames/s one process decodes from 720p H.264, straight to `size` px (videossl's decoder)."""
    from videossl.data.decode import Limits, decode_video, make_decoder
    from videossl.data.encode import write_video

    t = np.arange(frames_per_file)[:, None, None]
    y, x = np.arange(720)[None, :, None], np.arange(1280)[None, None, :]
    shape = (frames_per_file, 720, 1280)
    frames = np.stack([np.broadcast_to((x + 8 * t + y) % 256, shape), np.broadcast_to((x - 4 * t) % 256, shape),
                       np.broadcast_to((y + 6 * t) % 256, shape)], -1).astype(np.uint8)
    paths = []
    for i in range(n):
        paths.append(work / f"hd{i}.mp4")
        write_video(np.roll(frames, i, axis=2), paths[-1], fps=24, gop=24, crf=18)
    limits = Limits.of(parse_config("{}").ingest)
    t0 = time.perf_counter()
    for p in paths:
        decode_video(p, make_decoder("auto"), 24, size, limits)
    return n * frames_per_file / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--corpus", type=Path, default=None, help="rendered corpus folder (kept; default: a temporary one)")
    ap.add_argument("--hd-videos", type=int, default=6, help="720p files the decode rate is measured on")
    ap.add_argument("--hd-frames", type=int, default=96, help="frames per 720p file")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    print(f"machine: {machine()}; {now()}")
    with tempfile.TemporaryDirectory(prefix="videossl-bench-ingest-") as tmp:
        work = Path(tmp)
        corpus = render(args.corpus or work / "corpus", args.videos, args.size)
        chunk = max(1, math.ceil(args.videos / (2 * CHUNKS_PER_PARTITION)))
        runs = [run_config(work, corpus, args.size, p, w, chunk) for p, w in ((1, 1), (2, 1), (1, 2))]
        base = runs[0]["wall_s"]
        print(f"\ningest of {args.videos} synthetic videos at {args.size} px (ingest.chunk_videos {chunk}):")
        print(table(["partitions x decode processes", "wall s", "videos/s", "frames/s", "speed-up vs 1 x 1", "digest"],
                    [[f"{r['partitions']} x {r['workers']}", round(r["wall_s"], 1), round(r["videos"] / r["wall_s"], 1),
                      round(r["frames"] / r["wall_s"]), f"{base / r['wall_s']:.2f}x", r["digest"][:12]] for r in runs]))
        same = len({r["digest"] for r in runs}) == 1
        print(f"same dataset digest whatever the partitions: {same}")
        rate = decode_rate_720p(work, args.size, args.hd_videos, args.hd_frames)
        efficiency = base / runs[1]["wall_s"] / 2  # what 2 partitions deliver of 2x one
        source_frames = KINETICS["videos"] * KINETICS["seconds"] * KINETICS["fps"]
        rows = [[n, round(source_frames / (rate * n * (efficiency if n > 1 else 1)) / 3600, 2)] for n in (1, 8, 32, 128)]
        print(f"\n720p H.264 decode, one process, to {args.size} px: {rate:.0f} source frames/s")
        print(f"projection, {KINETICS['videos']:,} videos x {KINETICS['seconds']} s x {KINETICS['fps']} fps = "
              f"{source_frames / 1e6:.0f} M source frames at 720p, one partition per pod, the 2-partition efficiency "
              f"{efficiency:.2f} (assumed for every N; S3 listing, downloads and the merge not counted):")
        print(table(["pods", "hours"], rows))
        if args.json:
            write_json(args.json, {"runs": runs, "same_digest": same, "decode_720p_fps": rate,
                                   "efficiency_2": efficiency, "projection_hours": dict(rows)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
