"""Our MAE training step vs HuggingFace transformers' VideoMAEForPreTraining, same config, same run.

Each iteration is one training step: uint8 clips -> normalised float input, tube-masked MAE forward
(encoder on visible tokens only, narrow decoder, MSE on the masked tokens), backward, AdamW step. Ours
runs the loop's own functions (`forward_backward`, `clip_and_check`: gradient clipping and the
on-device non-finite check); both sides use the loop's optimizer builder (fused AdamW, same lr,
weight decay and betas).
The configuration comes from params.yaml (or -S overrides) and is mirrored into a local
`VideoMAEConfig` (no hub download): encoder width/depth/heads/MLP ratio, frames, image size, patch,
tubelet, decoder width/depth/heads, normalised targets or not. Both see the very same batches with
the very same masks (ours as token indices, theirs as the equivalent boolean mask).

Precision follows the loop's rule for `pretrain.precision` on both sides (train/precision.py: bf16
autocast on a GPU or on a CPU with bf16 hardware such as AMX, else fp32); `--theirs-precision fp32`
runs the HF model at another precision in the same run (e.g. its fastest on this machine).
Ours follows the loop's switches: `pretrain.compile: true` compiles it (`-S pretrain.compile=true`;
the warm-up then includes the compile time, printed); theirs is compiled only with --compile-theirs.

Timing: warm-up, then many short rounds that alternate ours/theirs, so a noisy neighbour on a shared
machine hurts both alike. Each side's *best* round (least disturbed) gives the headline clips/s and
ratio; the median round is printed beside it. Prints a table and the ratio (the project's target:
ours >= 1.5x theirs). Never asserts a timing. Without transformers installed (`make bench` installs
the `bench` extra) it measures ours alone.

    .venv/bin/python benchmarks/bench_train_step.py [--steps 5] [--rounds 12] [-S model.depth=6 ...]
    .venv/bin/python benchmarks/bench_train_step.py --theirs-precision fp32   # against HF at fp32
    .venv/bin/python benchmarks/bench_train_step.py --profile   # where our step's time goes
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks.common import REPO, machine, median, now, table, time_steps, write_json
from videossl import objectives
from videossl.config import Config, load_config
from videossl.data.transforms import to_model_input
from videossl.models.checkpoint import encoder_shape
from videossl.models.vit import VideoViT, VitShape, count_params
from videossl.train import precision
from videossl.train.loop import clip_and_check, forward_backward
from videossl.train.optim import build_optimizer

TARGET_RATIO = 1.5
N_BATCHES = 4  # distinct batches cycled through (masks differ per batch)


def make_batches(cfg: Config, shape: VitShape, recipe, batch: int, n: int, seed: int = 0) -> list[dict]:
    """`n` batches as the loop gets them: uint8 clips [B, T, H, W, 3] + the recipe's masks (collate)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        examples = [{"clip": rng.integers(0, 256, (shape.frames, shape.img_size, shape.img_size, 3), dtype=np.uint8)}
                    for _ in range(batch)]
        rngs = [np.random.default_rng(rng.integers(1 << 62)) for _ in range(batch)]
        out.append(recipe.collate(examples, rngs))
    return out


def adamw(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The loop's optimizer builder (train/optim.py), hyperparameters and all, for both sides."""
    return build_optimizer(model, cfg.pretrain.lr, cfg.pretrain.weight_decay)


class Ours:
    name = "videossl (ours)"

    def __init__(self, cfg: Config, shape: VitShape, device: torch.device):
        torch.manual_seed(0)
        self.model, self.recipe = objectives.build(cfg, VideoViT(shape))
        self.model.to(device).train()
        self.opt = adamw(self.model, cfg)
        self.grad_clip = cfg.pretrain.grad_clip
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)
        self.compiled = cfg.pretrain.compile  # as the loop: torch.compile(model)
        self.forward = torch.compile(self.model) if self.compiled else self.model
        self.device = device
        self.autocast = precision.autocast(precision.autocast_dtype(cfg.pretrain.precision, device), device)

    def params(self) -> int:
        return count_params(self.model)

    def prepare(self, batch: dict) -> dict:
        return batch

    def step(self, batch: dict) -> float:
        """The loop's step, from its own functions: forward/backward of the whole batch in one pass,
        gradient clipping with the on-device non-finite check, the optimizer step."""
        micro = len(next(iter(batch.values())))
        loss, _ = forward_backward(self.forward, self.model, batch, micro, self.autocast, self.scaler, self.device)
        clip_and_check(self.model, self.opt, self.scaler, self.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss


class Theirs:
    name = "HF VideoMAEForPreTraining"

    def __init__(self, cfg: Config, shape: VitShape, device: torch.device, compiled: bool = False,
                 precision_name: str | None = None):
        from transformers import VideoMAEConfig, VideoMAEForPreTraining

        m = cfg.model
        hf = VideoMAEConfig(
            image_size=shape.img_size, patch_size=shape.patch, num_channels=3, num_frames=shape.frames,
            tubelet_size=shape.tubelet, hidden_size=shape.dim, num_hidden_layers=shape.depth,
            num_attention_heads=shape.heads, intermediate_size=int(shape.dim * shape.mlp_ratio),
            hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, qkv_bias=True,
            layer_norm_eps=1e-5, use_mean_pooling=False,  # final LayerNorm on the encoder, like ours
            decoder_hidden_size=m.decoder_dim, decoder_num_hidden_layers=m.decoder_depth,
            decoder_num_attention_heads=m.decoder_heads, decoder_intermediate_size=int(m.decoder_dim * m.mlp_ratio),
            norm_pix_loss=cfg.pretrain.normalize_targets, attn_implementation="sdpa")
        torch.manual_seed(0)
        self.model = VideoMAEForPreTraining(hf).to(device).train()
        self.attn = self.model.config._attn_implementation
        self.compiled = compiled
        self.forward = torch.compile(self.model) if compiled else self.model
        self.opt = adamw(self.model, cfg)
        self.device = device
        self.tokens = shape.num_tokens
        self.precision = precision_name or cfg.pretrain.precision
        self.dtype = precision.autocast_dtype(self.precision, device)
        self.autocast = precision.autocast(self.dtype, device)

    def params(self) -> int:
        return count_params(self.model)

    def prepare(self, batch: dict) -> dict:
        """The same masks as a boolean [B, N] (True = masked), the form VideoMAE takes."""
        clip, masked = batch["clip"], batch["masked"]
        bool_masked = torch.zeros(masked.shape[0], self.tokens, dtype=torch.bool)
        bool_masked.scatter_(1, masked, True)
        return {"clip": clip, "bool_masked_pos": bool_masked}

    def step(self, batch: dict) -> float:
        clip = batch["clip"].to(self.device, non_blocking=True)
        pixel_values = to_model_input(clip).transpose(1, 2)  # same normalisation; [B, T, C, H, W] as HF takes
        with self.autocast:
            loss = self.forward(pixel_values, bool_masked_pos=batch["bool_masked_pos"].to(self.device)).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


def describe(cfg: Config, shape: VitShape, batch: int) -> str:
    m, p = cfg.model, cfg.pretrain
    t, h, w = shape.grid
    n_mask = int(round(h * w * p.mask_ratio))
    return (f"encoder {shape.dim}x{shape.depth} ({shape.heads} heads, mlp {shape.mlp_ratio}), decoder "
            f"{m.decoder_dim}x{m.decoder_depth} ({m.decoder_heads} heads); clip {shape.frames}x{shape.img_size}^2, "
            f"patch {shape.patch}, tubelet {shape.tubelet} -> {shape.num_tokens} tokens, tube mask "
            f"{p.mask_ratio} ({t * (h * w - n_mask)} visible); {'normalised' if p.normalize_targets else 'plain'} "
            f"pixel targets; batch {batch}")


def profile(side, batches: list[dict], steps: int, rows: int = 25) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for i in range(3):
        side.step(batches[i % len(batches)])
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for i in range(steps):
            side.step(batches[i % len(batches)])
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def peer_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="params override")
    ap.add_argument("--batch", type=int, default=None, help="clips per step (default: pretrain.batch_size)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=12, help="alternating ours/theirs rounds")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first, each side")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: as the loop sets them)")
    ap.add_argument("--compile-theirs", action="store_true", help="torch.compile the HF model too")
    ap.add_argument("--theirs-precision", choices=["bf16", "fp16", "fp32"], default=None,
                    help="run the HF model at this precision instead of ours (e.g. its fastest on this machine)")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table of each side")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)

    # the peer is VideoMAE: both sides train MAE, whatever the project's default objective is
    cfg = load_config(args.params, ["pretrain.objective=mae", *args.set])
    torch.set_num_threads(args.threads or cfg.pretrain.threads or os.cpu_count() or 1)  # the loop's rule, 1 process
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or cfg.pretrain.batch_size
    shape = encoder_shape(cfg.model, "video", cfg.ingest.clip_frames, cfg.ingest.size)

    sides = [Ours(cfg, shape, device)]
    if peer_available():
        sides.append(Theirs(cfg, shape, device, compiled=args.compile_theirs, precision_name=args.theirs_precision))
    batches = make_batches(cfg, shape, sides[0].recipe, batch, N_BATCHES)
    prepared = [[s.prepare(b) for b in batches] for s in sides]

    print(f"bench_train_step {now()}: {machine()}")
    print(f"config: {describe(cfg, shape, batch)}")
    dtype = precision.autocast_dtype(cfg.pretrain.precision, device)
    print(f"ours: {precision.describe(cfg.pretrain.precision, dtype, device)} (the loop's rule)"
          + (f"; theirs: {precision.describe(sides[1].precision, sides[1].dtype, device)}" if len(sides) > 1 else "")
          + f"\nboth: AdamW (lr {cfg.pretrain.lr}, wd {cfg.pretrain.weight_decay}, betas 0.9/0.95, "
          f"fused, as in the loop); ours compiled: {sides[0].compiled}"
          + (f"; HF attention: {sides[1].attn}, compiled: {sides[1].compiled}" if len(sides) > 1 else
             "\ntransformers is not installed: measuring ours alone (`make bench` installs the bench extra)"))
    warm = []
    for s, bs in zip(sides, prepared):
        t0 = time.perf_counter()
        for i in range(args.warmup):
            s.step(bs[i % len(bs)])
        warm.append(time.perf_counter() - t0)
    per_step: list[list[float]] = [[] for _ in sides]
    for _ in range(args.rounds):
        for k, (s, bs) in enumerate(zip(sides, prepared)):
            per_step[k].append(time_steps(lambda i: s.step(bs[i % len(bs)]), args.steps))

    rows, results = [], {}
    for s, times, w in zip(sides, per_step, warm):
        med, best = median(times), min(times)
        results[s.name] = {"params": s.params(), "ms_per_step_best": best * 1e3, "ms_per_step_median": med * 1e3,
                           "clips_per_second": batch / best, "clips_per_second_median": batch / med,
                           "warmup_seconds": w}
        rows.append([s.name, f"{s.params() / 1e6:.2f} M", best * 1e3, med * 1e3, batch / best, batch / med, w])
    print(table(["model", "params", "ms/step (best)", "ms/step (median)", "clips/s (best)", "clips/s (median)",
                 f"warm-up s ({args.warmup} steps)"], rows))
    ratio = ratio_median = None
    if len(sides) > 1:
        ratio = min(per_step[1]) / min(per_step[0])
        ratio_median = median(per_step[1]) / median(per_step[0])
        print(f"ours / theirs throughput: {ratio:.2f}x best rounds, {ratio_median:.2f}x median rounds "
              f"({'meets' if ratio >= TARGET_RATIO else 'BELOW'} the {TARGET_RATIO}x target); "
              f"{args.rounds} alternating rounds x {args.steps} steps, after {args.warmup} warm-up steps each")
    if args.profile:
        for s, bs in zip(sides, prepared):
            print(f"\n--- profile: {s.name}, {args.steps} steps ---")
            print(profile(s, bs, args.steps))
    payload = {"date": now(), "machine": machine(), "config": describe(cfg, shape, batch), "batch": batch,
               "steps": args.steps, "rounds": args.rounds, "results": results, "ratio": ratio,
               "ratio_median": ratio_median}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
