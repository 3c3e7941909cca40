"""CVRL / VITO-style contrastive learning: two clips of one video at a sampled time gap are positives,
the other videos' clips in the batch are negatives (symmetric InfoNCE).

- the recipe cuts clip 1 at the example's start and clip 2 `gap` frames later, gap uniform in
  [0, max_gap] but never past the video's end (a start near the end gets a smaller gap);
  `frames_needed` = frames + max_gap covers both windows;
- each clip gets its own spatial augmentation (random resized crop back to the input size, horizontal
  flip), drawn once per clip and applied identically to all its frames, so the augmentation adds no
  motion; done on uint8 frames with numpy + torch on the CPU side (no torchvision);
- the frame encoder (T=1) trains the same way: the two "clips" are single frames `gap` apart;
- with `background: swap`, each clip's static part (its per-pixel temporal median) is replaced by
  another clip's of the batch, a different one for each of the pair (`swap_backgrounds`, in the collate
  function): a video's clips share its static background, so without this InfoNCE can pair them by the
  background alone and learn nothing about motion (the shortcut FAME and Background Erasing remove);
- objective: mean-pooled encoder features -> projection MLP -> L2-normalised; InfoNCE at
  `temperature`, both directions averaged. Negatives are the clips of the same rank's batch (under
  DDP each rank contrasts its own per-rank batch; gradients are then averaged as usual).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videossl.data.shards import ClipStore, Video
from videossl.data.transforms import to_model_input
from videossl.models.vit import VideoViT, init_weights
from videossl.objectives.base import Batch, Example, Objective, Recipe, stack

ASPECT = (3 / 4, 4 / 3)  # crop aspect-ratio range (SimCLR/CVRL's)


@dataclass(frozen=True)
class View:
    """One clip's augmentation: a crop box, a horizontal flip, and a colour change (a permutation of
    the RGB channels and a brightness gain)."""
    top: int
    left: int
    height: int
    width: int
    flip: bool
    channels: tuple[int, int, int] = (0, 1, 2)
    gain: float = 1.0


def draw_view(height: int, width: int, scale: tuple[float, float], rng: np.random.Generator,
              flip: bool = True, colour: float = 0.0) -> View:
    """A random resized crop (area fraction in `scale`, aspect in ASPECT), a coin-flip mirror when
    `flip`, and with `colour` > 0 a random channel order and a brightness gain in 1 +- colour."""
    box = (0, 0, height, width)  # fallback: the whole frame
    for _ in range(10):
        area = rng.uniform(*scale) * height * width
        ar = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
        w, h = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
        if 0 < h <= height and 0 < w <= width:
            box = (int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w)
            break
    mirror = flip and bool(rng.random() < 0.5)
    if colour <= 0:
        return View(*box, flip=mirror)
    channels = tuple(int(c) for c in rng.permutation(3))
    return View(*box, flip=mirror, channels=channels, gain=float(1 + rng.uniform(-colour, colour)))


def augment(frames: np.ndarray, view: View) -> np.ndarray:
    """Apply one view to every frame: uint8 [T, H, W, 3] -> uint8 [T, H, W, 3] (resized back)."""
    _, height, width, _ = frames.shape
    crop = frames[:, view.top:view.top + view.height, view.left:view.left + view.width]
    if view.flip:
        crop = crop[:, :, ::-1]
    if view.channels != (0, 1, 2):
        crop = crop[..., list(view.channels)]
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(0, 3, 1, 2).float()
    if (view.height, view.width) != (height, width):
        # antialiasing only acts when shrinking: a crop resized up gets the same values from the plain
        # bilinear kernel, 3x faster (docs/measurements.md), and this runs on every training clip
        shrink = view.height > height or view.width > width
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
    if view.gain != 1.0:
        x = x.mul_(view.gain)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


PAIR = ("view1", "view2")
STATIC = "_static"  # an example's key + this: that clip's static part, under the clip's own view
# The static part of a clip is the per-pixel median of STATIC_SAMPLES frames spread over STATIC_SPAN frames
# of its video around it: a clip's own 8 frames keep any object that moves less than its size in them
# (and would hand it to another clip); a few seconds at the ingest rate see nearly every object move on.
# One median per example (both clips of a pair share it): 16 frames cost ~1 ms at 32 px.
STATIC_SPAN = 48
STATIC_SAMPLES = 16


def static_part(store: ClipStore, video: Video, first: int, last: int) -> np.ndarray:
    """uint8 [1, H, W, 3]: the per-pixel median of frames of `video` spread over STATIC_SPAN frames
    centred on frames first..last: what does not move there (the background of a still camera)."""
    span = min(video.frames, STATIC_SPAN)
    start = min(max(0, (first + last) // 2 - span // 2), video.frames - span)
    stride = max(1, span // STATIC_SAMPLES)
    frames = store.window(video, start, (span - 1) // stride + 1, stride)
    return np.median(frames, axis=0, keepdims=True).round().astype(np.uint8)


def swap_backgrounds(examples: list[Example], rngs: list[np.random.Generator], keys: tuple[str, ...] = PAIR) -> None:
    """In place: each example's clip under `key` trades its static part (`key` + STATIC, which this
    removes) for another example's, a different partner for each key where the batch allows: clip - its
    static part + the partner's. Partners are drawn from each example's own generator, so a sample draws
    the same partners wherever its batch is collated."""
    n = len(examples)
    statics = {k: [e.pop(k + STATIC).astype(np.float32) for e in examples] for k in keys}
    if n < 2:
        return  # no other clip to take a background from
    for i, (example, rng) in enumerate(zip(examples, rngs)):
        taken = {i}
        for k in keys:
            others = [j for j in range(n) if j not in taken] or [j for j in range(n) if j != i]
            j = others[int(rng.integers(len(others)))]
            taken.add(j)
            moved = example[k].astype(np.float32) - statics[k][i] + statics[k][j]
            example[k] = np.clip(np.rint(moved), 0, 255).astype(np.uint8)


class ContrastiveRecipe(Recipe):
    def __init__(self, frames: int, max_gap: int, crop_scale: tuple[float, float], flip: bool = True,
                 colour: float = 0.0, background: str = "keep"):  # pretrain.contrastive.background: keep | swap
        super().__init__(frames)
        self.max_gap, self.crop_scale = max_gap, tuple(crop_scale)
        self.flip, self.colour, self.background = flip, colour, background

    def collate(self, examples, rngs: list[np.random.Generator]) -> Batch:
        if self.background == "swap":
            swap_backgrounds(examples, rngs)
        return stack(examples)

    @property
    def frames_needed(self) -> int:
        return self.frames + self.max_gap

    def example(self, store: ClipStore, video: Video, start: int, rng: np.random.Generator) -> Example:
        room = video.frames - self.frames - start  # the latest second start that still fits
        if room < 0:
            raise IndexError(f"clip at {start} of {self.frames} frames does not fit {video.source_id} "
                             f"({video.frames} frames)")
        gap = int(rng.integers(min(self.max_gap, room) + 1))
        out = {}
        static = static_part(store, video, start, start + gap + self.frames) if self.background == "swap" else None
        for key, s in zip(PAIR, (start, start + gap)):
            clip = store.window(video, s, self.frames)
            view = draw_view(clip.shape[1], clip.shape[2], self.crop_scale, rng, self.flip, self.colour)
            out[key] = augment(clip, view)
            if static is not None:  # under the clip's own crop and colour
                out[key + STATIC] = augment(static, view)
        out["gap"] = np.array(gap, dtype=np.int64)
        return out


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of L2-normalised [B, K] embeddings whose rows i are positives:
    (loss, top-1 accuracy of finding the positive among the batch, both directions averaged)."""
    logits = z1 @ z2.T / temperature
    labels = torch.arange(len(z1), device=z1.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    acc = ((logits.argmax(1) == labels).float().mean() + (logits.argmax(0) == labels).float().mean()) / 2
    return loss, acc


class Contrastive(Objective):
    def __init__(self, encoder: VideoViT, proj_dim: int, temperature: float):
        super().__init__(encoder)
        d = encoder.shape.dim
        self.temperature = temperature
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, proj_dim))
        self.head.apply(init_weights)

    def project(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 clips [B, T, H, W, 3] -> L2-normalised projections [B, proj_dim] (float32)."""
        return self.project_pooled(self.encoder.embed(to_model_input(clips)))

    def project_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mean-pooled encoder features [B, D] -> L2-normalised projections [B, proj_dim] (float32)."""
        return F.normalize(self.head(pooled).float(), dim=-1)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        z1, z2 = self.project(torch.cat([batch["view1"], batch["view2"]])).chunk(2)
        loss, acc = info_nce(z1, z2, self.temperature)
        return loss, {"acc": acc.detach(), "gap": batch["gap"].float().mean()}  # tensors: read at log steps
