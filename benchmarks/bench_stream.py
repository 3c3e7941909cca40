"""Shards streamed from S3 against the dataset copied first: time to the first batch, loader throughput
from S3 against what the training step consumes, and the disk the bounded cache uses.

The dataset (default: a small synthetic set ingested at `-S ingest.size=112 -S ingest.clip_frames=16`,
the issue's 16x112^2, in shards of `--shard-frames`) is published to an S3 endpoint (`--s3-endpoint`, else a moto server started on
loopback: `make setup-test` installs moto), then read as a trainer pod reads it:

1. copy: `storage.download_dir` of the whole folder, then the loop's first batch;
2. stream: `data.remote.stage_index` (the small files only), then the first batch (its shards fetched
   on first read), and the loader's clips/s from a cold cache over `--steps` batches with
   pretrain.shard_window 2 and a cache of two shards;
3. the training step's clips/s at that clip shape (default model and precision), and the ratio.

    .venv/bin/python benchmarks/bench_stream.py [-S ingest.size=112 -S ingest.clip_frames=16] [--steps 20]

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

from benchmarks.bench_loader import TARGET_RATIO, training_clips_per_second
from benchmarks.common import REPO, machine, now, table, write_json
from videossl import objectives, storage
from videossl.config import load_config
from videossl.data.remote import stage_index
from videossl.data.shards import SHARDS, ClipStore
from videossl.models.checkpoint import encoder_shape
from videossl.models.vit import VideoViT
from videossl.train.data import ClipDataset, Collator, GlobalBatchSampler, make_loader

# the 16x112^2 clips, in videos long enough for the default objective's 4x-speed window (64 frames)
SHAPE = ["ingest.size=112", "ingest.clip_frames=16", "ingest.synthetic.seconds=10"]
# a pool of several shards' worth (the benchmark world, which training never reads, a token few)
INGEST = ["ingest.sources=[synthetic]", "ingest.synthetic.benchmark.families={bounce: 4}"]
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("-S", "--set", action="append", default=None, metavar="KEY=VALUE",
                    help=f"params override (default: {' '.join(SHAPE)})")
    ap.add_argument("--data", default=None, help="an ingested dataset (default: a small synthetic ingest)")
    ap.add_argument("--s3-endpoint", default=None, help="an S3 endpoint to publish to (default: moto on loopback)")
    ap.add_argument("--steps", type=int, default=20, help="loader batches timed from S3")
    ap.add_argument("--shard-frames", type=int, default=512, help="frames per shard of the ingested set (several shards)")
    ap.add_argument("--videos", type=int, default=64, help="pool videos of the ingested set")
    ap.add_argument("--train-steps", type=int, default=4, help="training steps timed for the consumption rate")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    overrides = SHAPE if args.set is None else args.set
    cfg = load_config(args.params, overrides)
    torch.set_num_threads(cfg.pretrain.threads or os.cpu_count() or 1)
    for k, v in MOTO_ENV.items():
        os.environ.setdefault(k, v)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        scratch = Path(tmp)
        if args.data:
            data = Path(args.data)
        else:  # at the clip shape under test (data/ingest is the default's 8x32^2)
            from videossl.steps.ingest import ingest

            data = scratch / "ingest"
            ingest(load_config(args.params, overrides + INGEST + [f"ingest.shard_frames={args.shard_frames}",
                                                                  f"ingest.synthetic.pool.families={{bounce: {args.videos}}}"]), data)
        shard_bytes = sorted(p.stat().st_size for p in (data / SHARDS).glob("*.npy"))
        dataset_bytes = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        print(f"bench_stream {now()}: {machine()}")
        store = ClipStore(data)
        print(f"data: {data}: {len(shard_bytes)} shards, {dataset_bytes / 2**20:.0f} MiB; clips "
              f"{store.clip_frames}x{store.size}^2; batch {cfg.pretrain.batch_size}")
        with s3_endpoint(args.s3_endpoint, scratch) as endpoint:
            bucket = "bench-stream"
            with contextlib.suppress(Exception):
                storage.s3_client(endpoint).create_bucket(Bucket=bucket)
            uri = storage.upload_dir(data, f"s3://{bucket}/data", endpoint)

            t0 = time.perf_counter()
            copied = storage.download_dir(uri, scratch / "copy", endpoint)
            copy_first = first_batch_seconds(cfg, copied, t0)

            cache = scratch / "cache"
            bound = sum(shard_bytes[-2:])
            t0 = time.perf_counter()
            index = stage_index(uri, scratch / "index", cache, bound, endpoint)
            stream_first = first_batch_seconds(cfg, index, t0)

            streamed = ClipStore(stage_index(uri, scratch / "index-cold", scratch / "cache-cold", bound, endpoint))
            t0 = time.perf_counter()
            streaming = loader(cfg, streamed, args.steps, 2)
            n = sum(len(next(iter(b.values()))) for b in streaming)
            stream_rate = n / (time.perf_counter() - t0)
            epochs = n / (len(streaming.dataset) // cfg.pretrain.batch_size * cfg.pretrain.batch_size)
            cached = max((sum(p.stat().st_size for p in (scratch / "cache-cold").glob("*.npy")), 0))
        consume = training_clips_per_second(cfg, store, args.train_steps)
        print(table(["from S3", "seconds to the first batch"],
                    [["copy the dataset, then read", round(copy_first, 2)],
                     ["stream the shards (index, then each shard on first read)", round(stream_first, 2)]]))
        print(table(["what", "clips/s", "vs consumption"],
                    [["loader, shards streamed from S3 (cold cache of 2 shards, shard_window 2)", round(stream_rate, 1),
                      f"{stream_rate / consume:.1f}x"],
                     ["training step consumes (default model and precision)", round(consume, 1), "1.0x"]]))
        ratio = stream_rate / consume
        print(f"streamed loader / training: {ratio:.1f}x ({'meets' if ratio >= TARGET_RATIO else 'BELOW'} the "
              f"{TARGET_RATIO:.0f}x target); time to first batch {copy_first / stream_first:.1f}x shorter streamed; "
              f"cache on disk {cached / 2**20:.0f} MiB of {dataset_bytes / 2**20:.0f} MiB "
              f"({streamed.fetches} shard fetches of {len(shard_bytes)} shards in {epochs:.1f} epochs)")
    payload = {"date": now(), "machine": machine(), "copy_first_batch_s": copy_first, "stream_first_batch_s": stream_first,
               "stream_clips_per_second": stream_rate, "training_clips_per_second": consume, "ratio": ratio,
               "cache_bytes": cached, "dataset_bytes": dataset_bytes}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
