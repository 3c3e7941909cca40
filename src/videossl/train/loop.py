"""The pretraining loop: one function, read top to bottom (nanoGPT style).

Runs identically on 1 CPU process and N GPU ranks; what differs (autocast, fused AdamW, pinned
memory) is switched by the device, not by separate code paths.

The global batch (`pretrain.batch_size`) is the same whatever the world size: each rank takes an
equal share of it and may go through that share in micro-batches (gradient accumulation). The data
order and every random draw depend on (seed, step, position in the global batch) only, so the step
is all a resumed run needs to see exactly what an uninterrupted one would (train/data.py).
Checkpoints (save, keep-last, resume) live in train/checkpointing.py.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from videossl import objectives
from videossl.config import Config
from videossl.data.shards import ClipStore, dataset_digest
from videossl.errors import StepError
from videossl.models.checkpoint import encoder_shape, save_checkpoint
from videossl.models.vit import VideoViT, count_params, flops_per_clip
from videossl.train import distributed, precision
from videossl.train.checkpointing import Checkpointer, run_spec, set_rng_state
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


def check_world(cfg: Config, world: int, store: ClipStore) -> None:
    """Params that cannot work with this many ranks on this dataset fail before any step."""
    pcfg = cfg.pretrain
    shards = len({v.shard for v in store.videos})
    if world > shards:
        raise TrainingError(f"pretrain.nproc: {world} processes in all, but {store.dir} has only {shards} shard "
                            f"file(s); use at most {shards} processes, or ingest with a smaller ingest.shard_frames")
    if pcfg.batch_size % world:
        raise TrainingError(f"pretrain.batch_size ({pcfg.batch_size}) must be divisible by the number of "
                            f"processes ({world}): every process takes an equal share of the global batch")
    share = pcfg.batch_size // world
    if pcfg.micro_batch and share % pcfg.micro_batch:
        raise TrainingError(f"pretrain.micro_batch ({pcfg.micro_batch}) must divide each process's share of the "
                            f"batch (pretrain.batch_size / {world} processes = {share})")


def recompute_in_backward(blocks: nn.ModuleList) -> None:
    """Activation checkpointing: keep only each block's input and recompute the block in the backward
    pass. The blocks' forward is wrapped, not the blocks, so state_dict keys do not change."""
    for block in blocks:
        block.forward = functools.partial(torch.utils.checkpoint.checkpoint, block.forward, use_reentrant=False)


def forward_backward(forward, ddp: nn.Module, batch: dict[str, torch.Tensor], micro: int, autocast, scaler,
                     device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and gradients of this rank's share of the global batch, in passes of `micro` clips
    (gradient accumulation); returns the share's mean loss (detached).

    Each pass's loss is a mean over its clips; scaled by 1/n and summed over the n passes, its
    gradient is that of the mean over the share. DDP averages the ranks' gradients (all-reduced once,
    in the last pass: no_sync before), so the gradient is that of the mean loss over the global
    batch, whatever the world size and micro_batch (objectives must weigh clips equally).
    Also returns the objective's own logs of the last pass (accuracies, per-part losses).
    """
    n = len(next(iter(batch.values()))) // micro
    total = torch.zeros((), device=device)
    for i in range(n):
        part = {k: v[i * micro:(i + 1) * micro].to(device, non_blocking=True) for k, v in batch.items()}
        with ddp.no_sync() if isinstance(ddp, DDP) and i < n - 1 else nullcontext():
            with autocast:
                loss, logs = forward(part)
            scaler.scale(loss / n).backward()
        total += loss.detach()
    return total / n, logs


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state_dict (names and raw bytes): equal digests = bit-identical weights."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _threads(cfg: Config, env: distributed.DistEnv) -> int:
    return cfg.pretrain.threads or max(1, (os.cpu_count() or 1) // env.local_world)


def train(cfg: Config, data_dir: str | Path, out_path: str, variant: str, checkpoint_dir: str | None = None) -> dict:
    """Pretrain the `variant` ("video" or "frames") encoder; rank 0 writes the training checkpoints
    (in `checkpoint_dir`, default: next to `out_path` in checkpoints/) and the final encoder."""
    pcfg = cfg.pretrain
    steps = pcfg.steps if variant == "video" else pcfg.baseline_steps
    env = distributed.read_env()
    store = ClipStore(data_dir)
    check_world(cfg, env.world, store)
    device = distributed.setup(env)
    torch.set_num_threads(_threads(cfg, env))
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank

    shape = encoder_shape(cfg.model, variant, store.clip_frames, store.size)
    model, recipe = objectives.build(cfg, VideoViT(shape), variant)
    model.to(device)
    if pcfg.activation_checkpointing:
        recompute_in_backward(model.encoder.blocks)
    dataset = ClipDataset(store, variant, recipe, cfg.seed)
    on_gpu = device.type == "cuda"
    # fused AdamW on CPU too (torch >= 2.4): one kernel for all parameters instead of a Python loop
    # over them, measured 6.8 -> 1.4 ms per step on the default model
    optimizer = torch.optim.AdamW(model.parameters(), lr=pcfg.lr, weight_decay=pcfg.weight_decay,
                                  betas=(0.9, 0.95), fused=True)
    dtype = precision.autocast_dtype(pcfg.precision, device)
    autocast = precision.autocast(dtype, device)
    if env.is_main:
        print(f"pretrain[{variant}]: {precision.describe(pcfg.precision, dtype, device)}", flush=True)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)  # a no-op unless fp16

    # resume: weights, optimizer, scaler, RNG and the step, which is also the data position
    digest = dataset_digest(data_dir)
    spec = run_spec(cfg, variant, steps, digest)  # what this run computes: its checkpoints are its own
    ckpt = Checkpointer.for_run(checkpoint_dir or f"{str(out_path).rsplit('/', 1)[0]}/checkpoints", spec,
                                pcfg.keep_last, env)
    start, loss_val = 0, float("nan")
    state = ckpt.resume() if pcfg.resume else None
    if state is not None:
        model.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], env.rank)
        start, loss_val = state["step"], state["loss"]
        if env.is_main:
            print(f"pretrain[{variant}]: resuming at step {start}/{steps} from {ckpt.path(start)}", flush=True)

    ddp = DDP(model) if env.world > 1 else model
    forward = torch.compile(ddp) if pcfg.compile else ddp
    micro = pcfg.micro_batch or pcfg.batch_size // env.world  # default: this rank's share in one pass
    sampler = GlobalBatchSampler(len(dataset), pcfg.batch_size, env.rank, env.world, cfg.seed, start, steps)
    loader = make_loader(dataset, sampler, Collator(recipe, cfg.seed), pcfg.num_workers, pin_memory=on_gpu)

    # local rank 0 of every node reports (console, Prometheus); global rank 0 also logs to MLflow
    tracker = Telemetry(cfg, variant, env, shape, count_params(model.encoder)) if env.local_rank == 0 else nullcontext()
    with tracker:  # an exception ends the MLflow run as FAILED
        t_start = t_log = t_fetch = time.perf_counter()
        wait = 0.0
        model.train()
        for step, batch in enumerate(loader, start):
            wait += time.perf_counter() - t_fetch
            lr = lr_at(step, steps, pcfg.warmup_steps, pcfg.lr, pcfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr

            loss, logs = forward_backward(forward, ddp, batch, micro, autocast, scaler, device)
            loss_val = distributed.mean(loss)  # the global batch's loss, the same on every rank
            if not math.isfinite(loss_val):  # every rank sees it: all stop here, before the weights change
                raise TrainingError(f"{variant} pretraining: loss became {loss_val} at step {step}; stopped before "
                                    f"the optimizer step, the last checkpoint in {ckpt.root} is untouched "
                                    f"(try a lower pretrain.lr)")
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            model.after_step(step, steps)

            if (pcfg.checkpoint_every and (step + 1) % pcfg.checkpoint_every == 0) or step + 1 == steps:
                ckpt.save(step + 1, {"variant": variant, "spec": spec, "loss": loss_val, "lr": lr,
                                     "objective": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                                     "shape": shape.as_dict(), "config": cfg.model_dump(mode="json"),
                                     "dataset_digest": digest})
            if (step + 1) % pcfg.log_every == 0 or step + 1 == steps:
                now = time.perf_counter()
                n = min((step + 1) % pcfg.log_every or pcfg.log_every, step + 1 - start)
                clips_s = n * pcfg.batch_size / (now - t_log)
                if env.local_rank == 0:
                    tracker.step(step + 1, steps, loss_val, lr, clips_s, clips_s * shape.num_tokens,
                                 wait / (now - t_start), now - t_start, objective_logs=logs)
                t_log = now
            t_fetch = time.perf_counter()

        elapsed = time.perf_counter() - t_start
        replicas = distributed.all_gather(state_digest(model.state_dict()))  # DDP keeps the ranks bit-identical
        if len(set(replicas)) > 1:
            raise TrainingError(f"{variant} pretraining: the ranks' weights diverged ({replicas}); not exporting")
        result = {"variant": variant, "steps": steps, "resumed_from": start, "final_loss": loss_val,
                  "seconds": round(elapsed, 2), "clips_per_second": round((steps - start) * pcfg.batch_size / elapsed, 2),
                  "data_wait_fraction": round(wait / elapsed, 4), "params": count_params(model.encoder),
                  "encoder_gflops_per_clip": round(flops_per_clip(shape) / 1e9, 3), "world_size": env.world,
                  "weights_sha256": replicas}
        if env.is_main:
            save_checkpoint({"variant": variant, "shape": shape.as_dict(), "config": cfg.model_dump(mode="json"),
                             "dataset_digest": digest, "step": steps, "loss": loss_val,
                             "encoder": model.encoder.state_dict(), "objective": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "result": result},
                            out_path)
            tracker.log_result(result)
    if env.world > 1:
        torch.distributed.barrier()  # no rank starts the next variant before the checkpoint is written
    return result
