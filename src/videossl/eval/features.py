"""Frozen features: each distinct clip is embedded once per model, batched, under inference_mode.

A "featurizer" maps uint8 clips [B, T, H, W, 3] to features [B, F]. The benchmark always runs the
video model beside the bag-of-frames baseline (frame encoder applied per frame, mean-pooled) and
two floor baselines: the same video architecture at random initialisation, and raw pixels.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from videossl.data.shards import ClipStore
from videossl.data.transforms import to_model_input
from videossl.eval.tasks import ClipKey, clip_pixels
from videossl.models.vit import VideoViT

Featurizer = Callable[[torch.Tensor], torch.Tensor]
PIXEL_GRID = 8  # raw-pixel baseline: each frame average-pooled to 8x8


def video_featurizer(encoder: VideoViT) -> Featurizer:
    """The encoder's tokens pooled over space and kept in time order, concatenated ([B, T/tubelet * D]).

    A linear probe on a single mean over all tokens would discard the order the encoder produced;
    the bag-of-frames baseline, by contrast, is order-free by definition (a mean over frames)."""
    return lambda clips: encoder.embed_time(to_model_input(clips)).flatten(1)


def frame_features(store: ClipStore, keys: list[ClipKey], frame_encoder: VideoViT, batch: int) -> np.ndarray:
    """Bag of frames for each clip key: every distinct frame is embedded once with the T=1 encoder,
    then a clip's feature is the mean over its frames. Forward, reversed and 2x/4x windows of one
    video share most frames, so this is several times cheaper than embedding clip by clip."""
    needed: dict[str, set[int]] = {}
    for k in keys:
        needed.setdefault(k.video, set()).update(range(k.start, k.start + (store.clip_frames - 1) * k.step + 1, k.step))
    table: dict[tuple[str, int], np.ndarray] = {}
    flat = [(vid, f) for vid in sorted(needed) for f in sorted(needed[vid])]
    with torch.inference_mode():
        for i in range(0, len(flat), batch):
            chunk = flat[i:i + batch]
            pixels = np.stack([store.window(store.by_id[vid], f, 1) for vid, f in chunk])  # [B, 1, H, W, 3]
            emb = frame_encoder.embed(to_model_input(torch.from_numpy(pixels))).float().numpy()
            table.update(zip(chunk, emb))
    return np.stack([np.mean([table[(k.video, f)] for f in range(k.start, k.start + (store.clip_frames - 1) * k.step + 1, k.step)], axis=0)
                     for k in keys])


def pixel_featurizer(clips: torch.Tensor) -> torch.Tensor:
    x = to_model_input(clips)  # [B, 3, T, H, W]
    b, c, t, h, w = x.shape
    pooled = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(b * t, c, h, w), PIXEL_GRID)
    return pooled.reshape(b, -1)


def extract(store: ClipStore, keys: list[ClipKey], featurizers: dict[str, Featurizer],
            batch: int) -> dict[str, np.ndarray]:
    """{model name: features [len(keys), D]}; each batch of clips is read once for all models."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in featurizers}
    with torch.inference_mode():
        for i in range(0, len(keys), batch):
            clips = torch.from_numpy(np.stack([clip_pixels(store, k) for k in keys[i:i + batch]]))
            for name, featurize in featurizers.items():
                out[name].append(featurize(clips).float().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}
