"""Shards streamed from S3 against the dataset copied first, for decoded (npy) and compressed (h264)
shards: time to the first batch, loader throughput from S3 against what the training step consumes, the
disk the bounded cache uses, and (--run-steps) the data wait of a real training run on streamed shards.

For each format a small synthetic set is ingested (timed) at `-S ingest.size=112 -S ingest.clip_frames=16`,
the issue's 16x112^2, in shards of `--shard-frames`, published to an S3 endpoint (`--s3-endpoint`, else a
moto server started on loopback: `make setup-test` installs moto), then read as a trainer pod reads it:

1. copy: `storage.download_dir` of the whole folder, then the loop's first batch;
2. stream: `data.remote.stage_index` (the small files only), then the first batch (its shards fetched
   on first read), and the loader's clips/s (one process: h264 windows decoded in it) from a cold
   cache over `--steps` batches with pretrain.shard_window 2 and a cache of two shards;
3. the training step's clips/s at that clip shape (default model and precision), and the ratio;
4. with --run-steps N: `videossl.train.main` trains N steps from a cold cache, its data-wait fraction.

    .venv/bin/python benchmarks/bench_stream.py [--formats npy,h264] [--steps 20] [--run-steps 40]

Prints tables; never asserts a timing.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.bench_loader import TARGET_RATIO, TARGET_WAIT, real_run, training_clips_per_second
from benchmarks.common import REPO, machine, now, table, write_json
from videossl import objectives, storage
from videossl.config import load_config
from videossl.data.remote import stage_index
from videossl.data.shards import SHARD_SUFFIX, SHARDS, ClipStore
from videossl.models.checkpoint import encoder_shape
from videossl.models.vit import VideoViT
from videossl.train.data import ClipDataset, Collator, GlobalBatchSampler, make_loader

# the 16x112^2 clips, in videos long enough for the default objective's 4x-speed window (64 frames)
SHAPE = ["ingest.size=112", "ingest.clip_frames=16", "ingest.synthetic.seconds=10"]
# a pool of several shards' worth (the benchmark world, which training never reads, a token few)
INGEST = ["ingest.sources=[synthetic]", "ingest.synthetic.benchmark.families={bounce: 4}"]
FORMATS = ("npy", "h264")  # decoded frames, and clips kept compressed (decoded in the loader)
BUCKET = "bench-stream"
MOTO_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_endpoint(url: str | None, scratch: Path):
    if url:
        yield url
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(scratch / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("no S3 endpoint: pass --s3-endpoint, or install moto (make setup-test)")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def loader(cfg, store: ClipStore, steps: int, window: int):
    shape = encoder_shape(cfg.model, "video", store.clip_frames, store.size)
    _, recipe = objectives.build(cfg, VideoViT(shape))
    dataset = ClipDataset(store, "video", recipe, cfg.seed)
    sampler = GlobalBatchSampler(len(dataset), cfg.pretrain.batch_size, 0, 1, cfg.seed, 0, steps,
                                 dataset.shards() if window else None, window)
    return make_loader(dataset, sampler, Collator(recipe, cfg.seed), 0, pin_memory=False)


def first_batch_seconds(cfg, data: Path, started: float) -> float:
    next(iter(loader(cfg, ClipStore(data), 1, 2)))
    return time.perf_counter() - started


def shard_sizes(data: Path) -> list[int]:
    return sorted(p.stat().st_size for p in (data / SHARDS).iterdir())


def measure(args, cfg, overrides: list[str], fmt: str, endpoint: str, scratch: Path) -> dict:
    """One shard format: ingest it (timed), publish it, then the first batch copied and streamed, the
    streamed loader's clips/s from a cold cache, the cache's disk, and a real streamed run's data wait."""
    from videossl.steps.ingest import ingest

    work = scratch / fmt
    data = Path(args.data) if args.data else work / "ingest"
    seconds = None
    if not args.data:  # at the clip shape under test (data/ingest is the default's 8x32^2)
        fmt_overrides = overrides + [f"ingest.shard_format={fmt}"]
        t0 = time.perf_counter()
        ingest(load_config(args.params, fmt_overrides + INGEST + [
            f"ingest.shard_frames={args.shard_frames}", f"ingest.synthetic.pool.families={{bounce: {args.videos}}}"]), data)
        seconds = time.perf_counter() - t0
    sizes = shard_sizes(data)
    dataset_bytes = sum(p.stat().st_size for p in data.rglob("*") if p.is_file() and "sources" not in p.parts)
    store = ClipStore(data)
    uri = storage.upload_dir(data, f"s3://{BUCKET}/{fmt}", endpoint)

    t0 = time.perf_counter()
    copy_first = first_batch_seconds(cfg, storage.download_dir(uri, work / "copy", endpoint), t0)
    bound = sum(sizes[-2:])  # a cache of the two largest shards: what shard_window 2 reads at once
    t0 = time.perf_counter()
    stream_first = first_batch_seconds(cfg, stage_index(uri, work / "index", work / "cache", bound, endpoint), t0)

    cold = work / "cache-cold"
    streamed = ClipStore(stage_index(uri, work / "index-cold", cold, bound, endpoint))
    t0 = time.perf_counter()
    streaming = loader(cfg, streamed, args.steps, 2)
    n = sum(len(next(iter(b.values()))) for b in streaming)
    rate = n / (time.perf_counter() - t0)
    epochs = n / (len(streaming.dataset) // cfg.pretrain.batch_size * cfg.pretrain.batch_size)
    cached = sum(p.stat().st_size for p in cold.iterdir() if p.name.endswith(tuple(SHARD_SUFFIX.values())))
    run = None
    if args.run_steps:  # the trainer itself, reading through a cold cache of its own
        index = stage_index(uri, work / "index-run", work / "cache-run", bound, endpoint)
        run = real_run(args, overrides + ["pretrain.shard_window=2"], index, work)
    return {"format": fmt, "ingest_seconds": seconds, "videos": len(store.videos), "frames": sum(v.frames for v in store.videos),
            "shards": len(sizes), "dataset_bytes": dataset_bytes, "copy_first_batch_s": copy_first,
            "stream_first_batch_s": stream_first, "stream_clips_per_second": rate, "cache_bytes": cached,
            "fetches": streamed.fetches, "epochs": epochs, "real_run": run, "data": str(data)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("-S", "--set", action="append", default=None, metavar="KEY=VALUE",
                    help=f"params override (default: {' '.join(SHAPE)})")
    ap.add_argument("--data", default=None, help="an ingested dataset (default: a small synthetic ingest per format)")
    ap.add_argument("--formats", default=",".join(FORMATS), help="shard formats to ingest and compare")
    ap.add_argument("--s3-endpoint", default=None, help="an S3 endpoint to publish to (default: moto on loopback)")
    ap.add_argument("--steps", type=int, default=20, help="loader batches timed from S3")
    ap.add_argument("--shard-frames", type=int, default=512, help="frames per shard of the ingested set (several shards)")
    ap.add_argument("--videos", type=int, default=64, help="pool videos of the ingested set")
    ap.add_argument("--train-steps", type=int, default=4, help="training steps timed for the consumption rate")
    ap.add_argument("--run-steps", type=int, default=0,
                    help="steps of a real training run on the streamed shards, for its data wait (0: skip it)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    overrides = SHAPE if args.set is None else args.set
    cfg = load_config(args.params, overrides)
    torch.set_num_threads(cfg.pretrain.threads or os.cpu_count() or 1)
    for k, v in MOTO_ENV.items():
        os.environ.setdefault(k, v)
    formats = [f for f in args.formats.split(",") if f] if not args.data else [Path(args.data).name]
    print(f"bench_stream {now()}: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        scratch = Path(tmp)
        with s3_endpoint(args.s3_endpoint, scratch) as endpoint:
            with contextlib.suppress(Exception):
                storage.s3_client(endpoint).create_bucket(Bucket=BUCKET)
            results = [measure(args, cfg, overrides, fmt, endpoint, scratch) for fmt in formats]
        consume = training_clips_per_second(cfg, ClipStore(Path(results[0]["data"])), args.train_steps)
    first = results[0]
    print(f"clips {cfg.ingest.clip_frames}x{cfg.ingest.size}^2; {first['videos']} pool videos, {first['frames']} frames; batch {cfg.pretrain.batch_size}; "
          f"training consumes {consume:.1f} clips/s (default model and precision)")
    print(table(["format", "ingest s", "shards", "dataset MiB", "vs npy", "first batch: copied s", "streamed s",
                 "streamed loader clips/s", "vs consumption", "cache MiB"],
                [[r["format"], None if r["ingest_seconds"] is None else round(r["ingest_seconds"], 1), r["shards"],
                  round(r["dataset_bytes"] / 2**20, 1), f"{r['dataset_bytes'] / first['dataset_bytes']:.3f}x",
                  round(r["copy_first_batch_s"], 2), round(r["stream_first_batch_s"], 2),
                  round(r["stream_clips_per_second"], 1), f"{r['stream_clips_per_second'] / consume:.1f}x",
                  round(r["cache_bytes"] / 2**20, 1)] for r in results]))
    for r in results:
        ratio = r["stream_clips_per_second"] / consume
        print(f"{r['format']}: streamed loader / training {ratio:.1f}x ({'meets' if ratio >= TARGET_RATIO else 'BELOW'} "
              f"the {TARGET_RATIO:.0f}x target); first batch {r['copy_first_batch_s'] / r['stream_first_batch_s']:.1f}x "
              f"sooner streamed; cache {r['cache_bytes'] / 2**20:.1f} of {r['dataset_bytes'] / 2**20:.1f} MiB "
              f"({r['fetches']} shard fetches of {r['shards']} shards in {r['epochs']:.1f} epochs)")
        if r["real_run"]:
            run = r["real_run"]
            print(f"{r['format']}: a real run on streamed shards, {run['steps']} steps: {run['clips_per_second']} clips/s, "
                  f"data wait {run['data_wait_fraction']:.2%} ({'meets' if run['data_wait_fraction'] < TARGET_WAIT else 'ABOVE'} "
                  f"the {TARGET_WAIT:.0%} target)")
    payload = {"date": now(), "machine": machine(), "training_clips_per_second": consume, "formats": results}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
