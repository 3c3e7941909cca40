"""The pretraining loop: one function, read top to bottom (nanoGPT style).

Runs identically on 1 CPU process and N GPU ranks; what differs (bf16 autocast, fused AdamW, pinned
memory) is switched by the device, not by separate code paths.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from videossl import objectives
from videossl.config import Config
from videossl.data.shards import ClipStore
from videossl.errors import StepError
from videossl.models.checkpoint import encoder_shape, save_checkpoint
from videossl.models.vit import VideoViT, count_params, flops_per_clip
from videossl.train import distributed
from videossl.train.data import ClipDataset, Collator, GlobalBatchSampler, make_loader
from videossl.train.telemetry import Telemetry


class TrainingError(StepError):
    pass


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up, then cosine decay to `floor`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def _threads(cfg: Config, env: distributed.DistEnv) -> int:
    return cfg.pretrain.threads or max(1, (os.cpu_count() or 1) // env.local_world)


def train(cfg: Config, data_dir: str | Path, out_path: str | Path, variant: str) -> dict:
    """Pretrain the `variant` ("video" or "frames") encoder with MAE; rank 0 writes the checkpoint."""
    pcfg = cfg.pretrain
    steps = pcfg.steps if variant == "video" else pcfg.baseline_steps
    env = distributed.read_env()
    device = distributed.setup(env)
    torch.set_num_threads(_threads(cfg, env))
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank

    store = ClipStore(data_dir)
    shape = encoder_shape(cfg.model, variant, store.clip_frames, store.size)
    model, recipe = objectives.build(cfg, VideoViT(shape))
    model.to(device)
    dataset = ClipDataset(store, variant, recipe, cfg.seed)
    ddp = DDP(model) if env.world > 1 else model
    on_gpu = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=pcfg.lr, weight_decay=pcfg.weight_decay,
                                  betas=(0.9, 0.95), fused=on_gpu)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext()

    sampler = GlobalBatchSampler(len(dataset), pcfg.batch_size, env.rank, env.world, cfg.seed, 0, steps)
    loader = make_loader(dataset, sampler, Collator(recipe, cfg.seed), pcfg.num_workers, pin_memory=on_gpu)

    # local rank 0 of every node reports (console, Prometheus); global rank 0 also logs to MLflow
    tracker = Telemetry(cfg, variant, env, shape, count_params(model.encoder)) if env.local_rank == 0 else nullcontext()
    with tracker:  # an exception ends the MLflow run as FAILED
        t_start = t_log = t_fetch = time.perf_counter()
        wait = 0.0
        loss_val = float("nan")
        model.train()
        for step, batch in enumerate(loader):
            wait += time.perf_counter() - t_fetch
            lr = lr_at(step, steps, pcfg.warmup_steps, pcfg.lr, pcfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss, _ = ddp(batch)
            if not torch.isfinite(loss):
                raise TrainingError(f"{variant} pretraining: loss became {loss.item()} at step {step}; no "
                                    f"checkpoint was written over the last good one (try a lower pretrain.lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.after_step(step, steps)

            if (step + 1) % pcfg.log_every == 0 or step + 1 == steps:
                loss_val = loss.item()
                now = time.perf_counter()
                n = (step + 1) % pcfg.log_every or pcfg.log_every
                clips_s = n * pcfg.batch_size / (now - t_log)
                if env.local_rank == 0:
                    tracker.step(step + 1, steps, loss_val, lr, clips_s, clips_s * shape.num_tokens,
                                 wait / (now - t_start), now - t_start)
                t_log = now
            t_fetch = time.perf_counter()

        elapsed = time.perf_counter() - t_start
        result = {"variant": variant, "steps": steps, "final_loss": loss_val, "seconds": round(elapsed, 2),
                  "clips_per_second": round(steps * pcfg.batch_size / elapsed, 2),
                  "data_wait_fraction": round(wait / elapsed, 4), "params": count_params(model.encoder),
                  "encoder_gflops_per_clip": round(flops_per_clip(shape) / 1e9, 3), "world_size": env.world}
        if env.is_main:
            save_checkpoint({"variant": variant, "shape": shape.as_dict(), "config": cfg.model_dump(mode="json"),
                             "dataset_digest": _digest(data_dir), "step": steps, "loss": loss_val,
                             "encoder": model.encoder.state_dict(), "objective": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "result": result},
                            out_path)
            tracker.log_result(result)
    if env.world > 1:
        torch.distributed.barrier()  # no rank starts the next variant before the checkpoint is written
    return result


def _digest(data_dir: str | Path) -> str:
    import json

    stats = Path(data_dir) / "ingest.json"
    return json.loads(stats.read_text()).get("digest", "unknown") if stats.is_file() else "unknown"
