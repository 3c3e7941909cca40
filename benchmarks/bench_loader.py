"""The data loader alone vs what the training step consumes, and the data wait of a real short run.

1. Loader: clips/s that `videossl.train.data` delivers at the default config (params.yaml: batch
   size, workers, the objective's recipe, so for MAE the tube masks made in the collate function)
   from real ingested shards, exactly as the loop builds it, with nothing consuming the batches.
2. Consumption: clips/s of real training steps at the default model size, on batches from the same
   loader (fetched beforehand, so nothing waits for data).
3. The ratio of the two (target: the loader >= 10x what training consumes).
4. A real short training run (`videossl.train.main`, the trainer torchrun starts, as a subprocess):
   its `data_wait_fraction` (target < 5%) and clips/s.

    .venv/bin/python benchmarks/bench_loader.py [--data data/ingest] [--workers 0 1] [--run-steps 60]

Without --data it takes data/ingest when `dvc repro` made one, else ingests a small synthetic set
into a temporary folder first. Prints tables; never asserts a timing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.bench_train_step import Ours
from benchmarks.common import REPO, machine, median, now, table, write_json
from videossl import objectives
from videossl.config import Config, dump_config, load_config
from videossl.data.shards import MANIFEST, ClipStore
from videossl.models.checkpoint import encoder_shape
from videossl.models.vit import VideoViT
from videossl.train.data import ClipDataset, Collator, GlobalBatchSampler, make_loader

TARGET_RATIO = 10.0
TARGET_WAIT = 0.05
# a small pool, and a benchmark world of a few videos (the default renders 1728 the loader never reads)
SMALL_INGEST = ["ingest.sources=[synthetic]", "ingest.synthetic.pool.families={bounce: 16}",
                "ingest.synthetic.benchmark.families={bounce: 8}"]


def dataset_dir(args, cfg_overrides: list[str], scratch: Path) -> Path:
    if args.data:
        return Path(args.data)
    default = REPO / "data" / "ingest"
    if (default / MANIFEST).is_file():
        return default
    from videossl.steps.ingest import ingest

    out = scratch / "ingest"
    print(f"no --data and no {default}: ingesting a small synthetic set into {out}", flush=True)
    ingest(load_config(args.params, cfg_overrides + SMALL_INGEST), out)
    return out


def loader(cfg: Config, store: ClipStore, steps: int, workers: int, seed_offset: int = 0):
    """The loop's loader (rank 0 of 1), `steps` global batches long."""
    shape = encoder_shape(cfg.model, "video", store.clip_frames, store.size)
    _, recipe = objectives.build(cfg, VideoViT(shape))
    dataset = ClipDataset(store, "video", recipe, cfg.seed)
    sampler = GlobalBatchSampler(len(dataset), cfg.pretrain.batch_size, 0, 1, cfg.seed + seed_offset, 0, steps)
    return make_loader(dataset, sampler, Collator(recipe, cfg.seed), workers, pin_memory=False), len(dataset)


def loader_clips_per_second(cfg: Config, store: ClipStore, steps: int, workers: int, warmup: int = 2) -> float:
    it = iter(loader(cfg, store, steps + warmup, workers)[0])
    for _ in range(warmup):  # worker start-up and first reads are not the steady state
        next(it)
    t0 = time.perf_counter()
    n = sum(len(next(iter(b.values()))) for b in it)
    return n / (time.perf_counter() - t0)


def training_clips_per_second(cfg: Config, store: ClipStore, steps: int, warmup: int = 3) -> float:
    shape = encoder_shape(cfg.model, "video", store.clip_frames, store.size)
    side = Ours(cfg, shape, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    batches = list(loader(cfg, store, steps + warmup, 0, seed_offset=1)[0])
    for b in batches[:warmup]:
        side.step(b)
    times = []
    for b in batches[warmup:]:
        t0 = time.perf_counter()
        side.step(b)
        times.append(time.perf_counter() - t0)
    return cfg.pretrain.batch_size / median(times)


def real_run(args, overrides: list[str], data: Path, scratch: Path) -> dict:
    """A short real training run of the video encoder through the trainer entry point; its result."""
    run_dir = scratch / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.params, overrides + [
        f"pretrain.steps={args.run_steps}", f"pretrain.log_every={max(1, args.run_steps // 4)}",
        f"tracking.uri=sqlite:///{run_dir}/mlruns.db", f"tracking.artifacts={run_dir}/mlartifacts"])
    config = run_dir / "params.yaml"
    config.write_text(dump_config(cfg))
    cmd = [sys.executable, "-m", "videossl.train.main", "--config", str(config), "--data", str(data),
           "--out", str(run_dir / "out"), "--variants", "video"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # as the pretrain step sets it
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"training run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no result line in the trainer's output:\n{proc.stdout[-3000:]}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="params override")
    ap.add_argument("--data", default=None, help="ingested dataset dir (default: data/ingest, else a small ingest)")
    ap.add_argument("--steps", type=int, default=40, help="loader batches timed")
    ap.add_argument("--train-steps", type=int, default=10, help="training steps timed for the consumption rate")
    ap.add_argument("--workers", type=int, nargs="*", default=None,
                    help="DataLoader workers to measure (default: pretrain.num_workers)")
    ap.add_argument("--run-steps", type=int, default=60, help="steps of the real training run (0: skip it)")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)

    cfg = load_config(args.params, args.set)
    torch.set_num_threads(cfg.pretrain.threads or os.cpu_count() or 1)  # the loop's rule, one process
    workers = args.workers if args.workers else [cfg.pretrain.num_workers]
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        scratch = Path(tmp)
        data = dataset_dir(args, args.set, scratch)
        store = ClipStore(data)
        n_examples = loader(cfg, store, 1, 0)[1]
        print(f"bench_loader {now()}: {machine()}")
        print(f"data: {data} ({n_examples} training clips of {store.clip_frames}x{store.size}^2); batch "
              f"{cfg.pretrain.batch_size}; objective {cfg.pretrain.objective} (masks made in collate)")

        loads = {w: loader_clips_per_second(cfg, store, args.steps, w) for w in workers}
        consume = training_clips_per_second(cfg, store, args.train_steps)
        rows = [[f"loader, {w} worker{'s' if w != 1 else ''}", clips, f"{clips / consume:.1f}x"]
                for w, clips in loads.items()]
        rows.append(["training step consumes (default model and precision)", consume, "1.0x"])
        print(table(["what", "clips/s", "vs consumption"], rows))
        ratio = loads[workers[0]] / consume
        print(f"loader / training: {ratio:.1f}x at num_workers={workers[0]} "
              f"({'meets' if ratio >= TARGET_RATIO else 'BELOW'} the {TARGET_RATIO:.0f}x target)")

        result = None
        if args.run_steps:
            result = real_run(args, args.set, data, scratch)
            wait = result["data_wait_fraction"]
            print(table(["real training run", "steps", "seconds", "clips/s", "data wait"],
                        [["videossl.train.main (video encoder)", result["steps"], result["seconds"],
                          result["clips_per_second"], f"{wait:.2%}"]]))
            print(f"data-wait fraction {wait:.2%} ({'meets' if wait < TARGET_WAIT else 'ABOVE'} the "
                  f"{TARGET_WAIT:.0%} target)")
    payload = {"date": now(), "machine": machine(), "data": str(data), "batch": cfg.pretrain.batch_size,
               "loader_clips_per_second": loads, "training_clips_per_second": consume, "ratio": ratio,
               "real_run": result}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
