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
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from videossl import objectives, storage
from videossl.config import Config
from videossl.data.shards import ClipStore, dataset_digest
from videossl.errors import StepError
from videossl.models.checkpoint import encoder_shape, export_state, save_checkpoint, state_digest, timings_path
from videossl.models.vit import VideoViT, count_params, flops_per_clip
from videossl.train import distributed, precision
from videossl.train.batching import BatchSplit, objectives_of, split_batch
from videossl.train.checkpointing import Checkpointer, checkpoint_dir_for, run_spec, set_rng_state
from videossl.train.data import ClipDataset, Collator, GlobalBatchSampler, Item, make_loader
from videossl.train.init_from import initial_weights
from videossl.train.optim import build_optimizer
from videossl.train.telemetry import Telemetry

HELD_OUT_STEP = 2**31 - 1


class TrainingError(StepError):
    pass


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up, then cosine decay to `floor`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def check_world(cfg: Config, world: int, store: ClipStore) -> BatchSplit:
    """Params that cannot work with this many ranks on this dataset fail before any step."""
    pcfg = cfg.pretrain
    shards = len({v.shard for v in store.pretraining_videos(real=pcfg.real_footage)})
    if world > shards:
        raise TrainingError(f"pretrain.nproc: {world} processes in all, but {store.dir} has only {shards} shard "
                            f"file(s) of training videos; use at most {shards} processes, or ingest with a "
                            f"smaller ingest.shard_frames")
    try:
        return split_batch(pcfg.batch_size, world, pcfg.micro_batch, objectives_of(pcfg))
    except ValueError as e:
        raise TrainingError(str(e)) from None


def recompute_in_backward(blocks: nn.ModuleList) -> None:
    """Activation checkpointing: keep only each block's input and recompute the block in the backward
    pass. The blocks' forward is wrapped, not the blocks, so state_dict keys do not change."""
    for block in blocks:
        block.forward = functools.partial(torch.utils.checkpoint.checkpoint, block.forward, use_reentrant=False)


def forward_backward(forward, ddp: nn.Module, batch: dict[str, torch.Tensor], micro: int, autocast, scaler,
                     device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of this rank's share of the global batch, in passes of `micro` clips
    (gradient accumulation); returns the share's mean loss (a detached device tensor: reading it on
    the host is a sync, done only at log steps).

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
        total += loss.detach().float()
    return total / n, logs


def clip_and_check(model: nn.Module, optimizer: torch.optim.Optimizer, scaler, max_norm: float | None) -> torch.Tensor:
    """Clip the gradient norm (after DDP's all-reduce, so every rank has the same norm) and return it,
    on the device. A non-finite norm (a NaN/inf loss on any rank makes every rank's averaged gradient
    non-finite) tells the fused AdamW kernel to skip the step (`found_inf`): no weight, moment or step
    counter changes, and no host sync is needed. fp16 keeps its gradient scaler, which does the same."""
    if scaler.is_enabled():
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm else float("inf"))
    if not scaler.is_enabled():
        optimizer.found_inf = (~torch.isfinite(norm)).float()
    return norm


class HeldOut:
    """The objective's own numbers on a fixed batch of held-out videos (the pool's validation split):
    what it learns, not what it memorises (pretext accuracies, contrastive accuracy, JEPA spreads)."""

    def __init__(self, store: ClipStore, variant: str, recipe, seed: int, size: int, real: bool = False):
        self.batch = None
        try:
            data = ClipDataset(store, variant, recipe, seed, split="val", real=real)
        except ValueError:  # no held-out videos (tiny datasets): nothing to report
            return
        rng = np.random.default_rng([seed, 3])
        picks = rng.choice(len(data), size=min(size, len(data)), replace=False)
        # a step number training never reaches: the held-out batch's random draws are its own
        items = [Item(HELD_OUT_STEP, i, int(k)) for i, k in enumerate(picks)]
        self.batch = Collator(recipe, seed)([data[it] for it in items])

    @torch.no_grad()
    def logs(self, model: nn.Module, autocast, device: torch.device) -> dict[str, float]:
        if self.batch is None:
            return {}
        with autocast:
            loss, logs = model({k: v.to(device) for k, v in self.batch.items()})
        return {"heldout_loss": float(loss), **{f"heldout_{k}": float(v) for k, v in logs.items()}}


def build(cfg: Config, store: ClipStore, variant: str):
    """The objective (its encoder for the data's clip shape, from pretrain.init_from or a random draw),
    its data recipe, the encoder's shape and the initial weights' record (None: a random draw)."""
    shape = encoder_shape(cfg.model, variant, store.clip_frames, store.size)
    encoder, init = VideoViT(shape), None
    if cfg.pretrain.init_from and variant == "video":  # the frame-encoder baseline always starts from a random draw
        state, init = initial_weights(cfg, shape)
        encoder.load_state_dict(state)  # after the random draw: every other part's initialisation is unchanged
    model, recipe = objectives.build(cfg, encoder, variant)
    return model, recipe, shape, init


def step_flops(cfg: Config, data_dir: str | Path, variant: str = "video", steps: int = 2) -> float:
    """Floating-point operations of one training step (forward and backward over the global batch),
    counted by torch's FLOP counter on this objective, model and data: the same on every machine and
    in every precision, so a compute budget in FLOPs buys the same steps anywhere (the study's unit).
    The mean over `steps` batches (masks and views are drawn per batch)."""
    from torch.utils.flop_counter import FlopCounterMode

    store = ClipStore(data_dir)
    torch.manual_seed(cfg.seed)
    model, recipe, _, _ = build(cfg, store, variant)
    data = ClipDataset(store, variant, recipe, cfg.seed, real=cfg.pretrain.real_footage)
    collate, batch_size = Collator(recipe, cfg.seed), cfg.pretrain.batch_size
    off = torch.amp.GradScaler("cpu", enabled=False)
    total = 0
    for step in range(steps):
        batch = collate([data[Item(step, i, (step * batch_size + i) % len(data))] for i in range(batch_size)])
        with FlopCounterMode(display=False) as counter:
            forward_backward(model, model, batch, batch_size, nullcontext(), off, torch.device("cpu"))
        total += counter.get_total_flops()
        model.zero_grad(set_to_none=True)
    return total / steps


def _threads(cfg: Config, env: distributed.DistEnv) -> int:
    return cfg.pretrain.threads or max(1, (os.cpu_count() or 1) // env.local_world)


def train(cfg: Config, data_dir: str | Path, out_path: str, variant: str, checkpoint_dir: str | None = None) -> dict:
    """Pretrain the `variant` ("video" or "frames") encoder; rank 0 writes the training checkpoints
    (in `checkpoint_dir`, default: next to `out_path` in checkpoints/) and the final encoder."""
    pcfg = cfg.pretrain
    steps = pcfg.steps if variant == "video" else pcfg.baseline_steps
    env = distributed.read_env()
    store = ClipStore(data_dir)
    split = check_world(cfg, env.world, store)
    device = distributed.setup(env)
    torch.set_num_threads(_threads(cfg, env))
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank

    model, recipe, shape, init = build(cfg, store, variant)
    if init and env.is_main:
        print(f"pretrain[{variant}]: initialised from {init['from']} ({init['kind']}, sha256 {init['sha256'][:12]})",
              flush=True)
    model.to(device)
    if pcfg.activation_checkpointing:
        recompute_in_backward(model.encoder.blocks)
    dataset = ClipDataset(store, variant, recipe, cfg.seed, real=pcfg.real_footage)
    on_gpu = device.type == "cuda"
    optimizer = build_optimizer(model, pcfg.lr, pcfg.weight_decay)
    dtype = precision.autocast_dtype(pcfg.precision, device)
    autocast = precision.autocast(dtype, device)
    if env.is_main:
        print(f"pretrain[{variant}]: {precision.describe(pcfg.precision, dtype, device)}", flush=True)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)  # a no-op unless fp16

    # resume: weights, optimizer, scaler, RNG and the step, which is also the data position
    digest = dataset_digest(data_dir)
    spec = run_spec(cfg, variant, steps, digest, init)  # what this run computes: its checkpoints are its own
    ckpt = Checkpointer.for_run(checkpoint_dir_for(checkpoint_dir, str(out_path).rsplit("/", 1)[0]), spec,
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
    sampler = GlobalBatchSampler(len(dataset), split.global_batch, env.rank, env.world, cfg.seed, start, steps,
                                 dataset.shards() if pcfg.shard_window else None, pcfg.shard_window)
    loader = make_loader(dataset, sampler, Collator(recipe, cfg.seed), pcfg.num_workers, pin_memory=on_gpu)
    heldout = HeldOut(store, variant, recipe, cfg.seed, pcfg.eval_batch, pcfg.real_footage) \
        if env.is_main and pcfg.eval_every else None

    # local rank 0 of every node reports (console, Prometheus); global rank 0 also logs to MLflow
    tracker = (Telemetry(cfg, variant, env, shape, count_params(model.encoder), dataset=(str(data_dir), digest),
                         init=init)
               if env.local_rank == 0 else nullcontext())
    with tracker:  # an exception ends the MLflow run as FAILED
        t_start = t_log = t_fetch = time.perf_counter()
        wait = 0.0
        window_loss = torch.zeros((), device=device)    # sum of the losses since the last log step
        skipped = torch.zeros((), device=device)        # non-finite steps skipped on the device
        model.train()
        for step, batch in enumerate(loader, start):
            wait += time.perf_counter() - t_fetch
            lr = lr_at(step, steps, pcfg.warmup_steps, pcfg.lr, pcfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr

            loss, logs = forward_backward(forward, ddp, batch, split.micro, autocast, scaler, device)
            grad_norm = clip_and_check(model, optimizer, scaler, pcfg.grad_clip)
            skipped += ~torch.isfinite(grad_norm)
            window_loss += loss
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            model.after_step(step, steps)

            log_now = (step + 1) % pcfg.log_every == 0 or step + 1 == steps
            save_now = (pcfg.checkpoint_every and (step + 1) % pcfg.checkpoint_every == 0) or step + 1 == steps
            if log_now or save_now:  # the host reads the device only here: one sync per log step
                bad = distributed.total(skipped)
                if bad:  # every rank sees the same sum: all stop here, and no skipped step changed the weights
                    raise TrainingError(f"{variant} pretraining: the loss or its gradient became non-finite in "
                                        f"{bad:.0f} step(s) up to step {step + 1}; those steps were skipped, the "
                                        f"checkpoints in {ckpt.root} are untouched (try a lower pretrain.lr)")
            if log_now:
                n = min((step + 1) % pcfg.log_every or pcfg.log_every, step + 1 - start)
                loss_val = distributed.total(window_loss) / (n * env.world)
                window_loss.zero_()
                now = time.perf_counter()
                clips_s = n * pcfg.batch_size / (now - t_log)
                if env.local_rank == 0:
                    extra = {"grad_norm": float(grad_norm), **{k: float(v) for k, v in logs.items()}}
                    if heldout is not None and ((step + 1) % pcfg.eval_every == 0 or step + 1 == steps):
                        model.eval()
                        extra.update(heldout.logs(model, autocast, device))
                        model.train()
                    tracker.step(step + 1, steps, loss_val, lr, clips_s, clips_s * shape.num_tokens,
                                 wait / (now - t_start), now - t_start, objective_logs=extra)
                t_log = now
            if save_now:
                ckpt.save(step + 1, {"variant": variant, "spec": spec, "loss": loss_val, "lr": lr,
                                     "objective": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                                     "shape": shape.as_dict(), "config": cfg.model_dump(mode="json"),
                                     "dataset_digest": digest})
            t_fetch = time.perf_counter()

        elapsed = time.perf_counter() - t_start
        replicas = distributed.all_gather(state_digest(model.state_dict()))  # DDP keeps the ranks bit-identical
        if len(set(replicas)) > 1:
            raise TrainingError(f"{variant} pretraining: the ranks' weights diverged ({replicas}); not exporting")
        result = {"variant": variant, "steps": steps, "resumed_from": start, "final_loss": loss_val,
                  "params": count_params(model.encoder), "encoder_gflops_per_clip": round(flops_per_clip(shape) / 1e9, 3),
                  "world_size": env.world, "weights_sha256": replicas,  # every rank's whole model: DDP kept them equal
                  "encoder_sha256": state_digest(model.encoder.state_dict()), **({"init_from": init} if init else {})}
        timings = {"seconds": round(elapsed, 2), "clips_per_second": round((steps - start) * pcfg.batch_size / elapsed, 2),
                   "data_wait_fraction": round(wait / elapsed, 4)}
        if env.is_main:
            # The exported model is its weights and what they mean (the encoder, and the objective's
            # own heads/projection/decoder for zero-shot scoring), nothing of how the run went (the
            # optimizer, RNG, timings stay in the training checkpoints): the same weights give the same
            # bytes, so DVC and the feature cache see no change where there is none.
            save_checkpoint(export_state(cfg, variant, model, dataset_digest=digest, step=steps, loss=loss_val,
                                         result=result), out_path)
            storage.put_text(timings_path(out_path), json.dumps(timings) + "\n")
            tracker.log_result({**result, **timings})
        result = {**result, **timings}
    if env.world > 1:
        torch.distributed.barrier()  # no rank starts the next variant before the checkpoint is written
    return result
