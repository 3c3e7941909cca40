"""Frozen features: each distinct clip is embedded once per (model, dataset), batched, under
`torch.inference_mode()`, and cached on disk by the model's and the dataset's digests.

Every model gives two views of a clip:
- `vectors` [N, F] for the linear and kNN probes;
- `tokens` [N, L, D] for the attentive probe (and the layout-keeping linear probe): the encoder's
  tokens average-pooled to a small spatial grid (`pool_grid` x `pool_grid`) per time slice, in time order.

The models, always side by side (the list is eval.scores.MODELS):
- video: the pretrained video encoder. Vectors keep time order (tokens pooled over space only,
  concatenated over time): one mean over all tokens would throw away the order the encoder made.
- frames: the bag-of-frames baseline: the frame encoder (T=1) on each frame, then a mean over the
  clip's frames, for vectors and tokens alike, so it is order-free by construction.
- ordered_frames: the same frame encoder's per-frame features concatenated in the clip's order: an
  image model with a temporal probe on top, the way most video systems are built today.
- random_init: the video architecture at random initialisation (same views as `video`), several seeds.
- pixels: raw pixels, each frame average-pooled to PIXEL_GRID x PIXEL_GRID, in time order.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from videossl.data.shards import ClipStore
from videossl.data.transforms import resize_clip, to_model_input
from videossl.eval.tasks import ClipKey, clip_pixels
from videossl.models.vit import VideoViT, pool_space
from videossl.progress import Progress
from videossl.storage import atomic_path
from videossl.train import precision

PIXEL_GRID = 8        # raw-pixel baseline: each frame average-pooled to 8x8
FEATURE_VERSION = 4   # bump when a featurizer changes: old cache entries then never match
# How a per-frame model (the T=1 frame encoder) turns its frames' features into a clip's
MEAN_FRAMES, ORDERED_FRAMES = "mean", "ordered"


@dataclass
class ClipFeatures:
    vectors: np.ndarray  # [N, F]
    tokens: np.ndarray   # [N, L, D]

    def take(self, rows: np.ndarray) -> "ClipFeatures":
        return ClipFeatures(self.vectors[rows], self.tokens[rows])


Featurize = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # uint8 clips -> (vectors, tokens)


@dataclass
class FeatureModel:
    """How one model embeds clips. With `per_frame` set, `featurize` sees single frames
    [B, 1, H, W, 3] and a clip is the mean over its frames (MEAN_FRAMES: the bag of frames) or their
    features in the clip's order (ORDERED_FRAMES); otherwise it sees whole clips [B, T, H, W, 3]."""
    name: str
    identity: str  # what the features depend on: checkpoint digest, or architecture + seed
    featurize: Featurize
    per_frame: str | None = None
    frame_table: str = ""  # per-frame models with the same value embed each frame once for all of them


def grid_pool(tokens: torch.Tensor, grid: tuple[int, int, int], cells: int) -> torch.Tensor:
    """[B, t*h*w, D] -> [B, t * cells^2, D]: each time slice's h x w tokens pooled to cells x cells."""
    b, _, d = tokens.shape
    t, h, w = grid
    x = tokens.view(b * t, h, w, d).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(x, cells).flatten(2).transpose(1, 2).reshape(b, t * cells * cells, d)


def encoder_model(name: str, encoder: VideoViT, identity: str, cells: int,
                  frames: str = MEAN_FRAMES) -> FeatureModel:
    """A video encoder (or the frame encoder, whose frames combine by `frames`) as a FeatureModel.
    Clips run under bf16 autocast where the device multiplies bf16 natively (4x faster on this
    project's AMX CPU); single frames (16 tokens) stay fp32, which is faster for sequences that short.
    A dataset of another clip shape (a labelled list ingested at its own size and length) is resampled
    to the encoder's own frames and size, as the external adapters resample to theirs."""
    encoder.eval()
    per_frame = frames if encoder.shape.frames == 1 else None
    device = next(encoder.parameters()).device
    autocast = precision.autocast(None if per_frame else precision.autocast_dtype("bf16", device), device)

    def featurize(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = resize_clip(to_model_input(clips), encoder.shape.frames, encoder.shape.img_size)  # a dataset of another clip shape
        with autocast:
            tokens = encoder(x).float()  # [B, N, D]
        t = encoder.shape.grid[0]
        vectors = pool_space(tokens, t).flatten(1)  # time order kept
        return vectors, grid_pool(tokens, encoder.shape.grid, cells)

    return FeatureModel(name, f"{identity}|cells={cells}|{per_frame}|v{FEATURE_VERSION}", featurize, per_frame,
                        frame_table=f"{identity}|cells={cells}" if per_frame else "")


def pixel_model(cells: int) -> FeatureModel:
    def featurize(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_model_input(clips)  # [B, 3, T, H, W]
        b, c, t, h, w = x.shape
        pooled = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(b * t, c, h, w), PIXEL_GRID)  # [B*T, 3, 8, 8]
        s = PIXEL_GRID // cells  # each token: one cell of the pooled frame, all channels
        tokens = pooled.view(b, t, c, cells, s, cells, s).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, t * cells * cells, c * s * s)
        return pooled.reshape(b, -1), tokens

    if PIXEL_GRID % cells:
        raise ValueError(f"probe_eval.pool_grid ({cells}) must divide the pixel baseline's grid ({PIXEL_GRID})")
    return FeatureModel("pixels", f"pixels|grid={PIXEL_GRID}|cells={cells}|v{FEATURE_VERSION}", featurize)


# ----------------------------------------------------------------------------------------------
# cache


def key_str(k: ClipKey) -> str:
    return f"{k.video}|{k.start}|{k.step}|{int(k.reversed)}|{int(k.shuffled)}"


class FeatureCache:
    """One .npz per (model identity, dataset digest): clip key -> (vector, tokens). New clips are
    added by rewriting the file atomically (write, then rename), so a crash never leaves half a file."""

    def __init__(self, root: str | os.PathLike | None, dataset_digest: str, variant: str = ""):
        self.root = Path(root) if root else None
        self.dataset = dataset_digest
        self.variant = variant  # how clips are read, when not plainly from the store (e.g. codec control)

    def with_variant(self, variant: str) -> "FeatureCache":
        return FeatureCache(self.root, self.dataset, variant)

    def path(self, model: FeatureModel) -> Path | None:
        if self.root is None:
            return None
        ident = hashlib.sha256(f"{model.identity}|{self.dataset}|{self.variant}".encode()).hexdigest()[:20]
        return self.root / f"{model.name}-{ident}.npz"

    def load(self, model: FeatureModel) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        path = self.path(model)
        if path is None or not path.is_file():
            return {}
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: (v, t) for k, v, t in zip(z["keys"].tolist(), z["vectors"], z["tokens"])}
        except (OSError, ValueError, KeyError) as e:  # a damaged cache is recomputed, never trusted
            print(f"probe_eval: ignoring unreadable feature cache {path} ({e})")
            return {}

    def save(self, model: FeatureModel, table: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        path = self.path(model)
        if path is None or not table:
            return
        keys = sorted(table)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no suffix
            np.savez(f, keys=np.array(keys), vectors=np.stack([table[k][0] for k in keys]),
                     tokens=np.stack([table[k][1] for k in keys]))


# ----------------------------------------------------------------------------------------------
# extraction


def _embed_clips(store: ClipStore, keys: list[ClipKey], models: list[FeatureModel], batch: int,
                 pixels: Callable[[ClipKey], np.ndarray]) -> dict[str, dict[str, tuple]]:
    """Each batch of clips is read once for all clip models."""
    out: dict[str, dict[str, tuple]] = {m.name: {} for m in models}
    if not keys:
        return out
    with Progress(total=len(keys), desc=f"features ({', '.join(m.name for m in models)})", unit="clips") as bar:
        for i in range(0, len(keys), batch):
            chunk = keys[i:i + batch]
            clips = torch.from_numpy(np.stack([pixels(k) for k in chunk]))
            for m in models:
                vec, tok = m.featurize(clips)
                out[m.name].update(zip(map(key_str, chunk), zip(vec.numpy(), tok.numpy())))
            bar.update(len(chunk))
    return out


def _combine_frames(rows: list[tuple[np.ndarray, np.ndarray]], how: str) -> tuple[np.ndarray, np.ndarray]:
    """A clip's (vector, tokens) from its frames' rows, given in the clip's order."""
    if how == ORDERED_FRAMES:
        return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
    # float64 mean: order-invariant up to the final rounding, so reversed clips match exactly
    return tuple(np.mean(np.stack([r[i] for r in rows]), axis=0, dtype=np.float64).astype(np.float32)
                 for i in (0, 1))


def _embed_frames_of_clips(keys: list[ClipKey], model: FeatureModel, batch: int,
                           pixels: Callable[[ClipKey], np.ndarray]) -> dict[str, tuple]:
    """Per-frame features of clips read by `pixels` (frames a transform made: no frame is shared)."""
    out = {}
    for i in range(0, len(keys), batch):
        chunk = keys[i:i + batch]
        clips = torch.from_numpy(np.stack([pixels(k) for k in chunk]))  # [B, T, H, W, 3]
        b, t = clips.shape[:2]
        vec, tok = model.featurize(clips.reshape(b * t, 1, *clips.shape[2:]))
        vec, tok = vec.view(b, t, -1).numpy(), tok.view(b, t, *tok.shape[1:]).numpy()
        out.update((key_str(k), _combine_frames([(vec[j, f], tok[j, f]) for f in range(t)], model.per_frame))
                   for j, k in enumerate(chunk))
    return out


def _embed_frames(store: ClipStore, keys: list[ClipKey], models: list[FeatureModel], batch: int) -> dict[str, dict]:
    """Per-frame models that share one frame table: every distinct frame is embedded once, then
    combined per clip and model. Forward, reversed, shuffled and 2x/4x clips of one video share their
    frames, so this is several times cheaper than embedding clip by clip."""
    t = store.clip_frames
    needed = sorted({(k.video, f) for k in keys for f in k.frame_indices(t)})
    table: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    with Progress(total=len(needed), desc=f"features (per frame: {', '.join(m.name for m in models)})", unit="frames") as bar:
        for i in range(0, len(needed), batch):
            chunk = needed[i:i + batch]
            frames = torch.from_numpy(np.stack([store.window(store.by_id[v], f, 1) for v, f in chunk]))
            vec, tok = models[0].featurize(frames)
            table.update(zip(chunk, zip(vec.numpy(), tok.numpy())))
            bar.update(len(chunk))
    out: dict[str, dict] = {m.name: {} for m in models}
    for m in models:
        for k in keys:
            # the bag of frames sums frames in index order (a float64 sum): a clip and any reordering of it
            # get bit-identical features, not ones that differ by float rounding (kNN tie-breaks would see it)
            order = k.frame_indices(t) if m.per_frame == ORDERED_FRAMES else sorted(k.frame_indices(t))
            out[m.name][key_str(k)] = _combine_frames([table[(k.video, f)] for f in order], m.per_frame)
    return out


def extract(store: ClipStore, keys: list[ClipKey], models: list[FeatureModel], batch: int,
            cache: FeatureCache, pixels: Callable[[ClipKey], np.ndarray] | None = None) -> dict[str, ClipFeatures]:
    """{model name: ClipFeatures with one row per key, in `keys` order}. Cached clips are not embedded
    again; `pixels` reads a clip (default: the store's window for the key)."""
    read = pixels or (lambda k: clip_pixels(store, k))
    tables = {m.name: cache.load(m) for m in models}
    with torch.inference_mode():
        missing = {m.name: [k for k in keys if key_str(k) not in tables[m.name]] for m in models}
        clip_models = [m for m in models if not m.per_frame and missing[m.name]]
        union = sorted({k for m in clip_models for k in missing[m.name]}, key=key_str)
        # a clip model embeds every clip in the union: cheaper than re-reading pixels per model
        for name, new in _embed_clips(store, union, clip_models, batch, read).items():
            tables[name].update(new)
        frame_models = [m for m in models if m.per_frame and missing[m.name]]
        if pixels is None:
            for shared in {m.frame_table for m in frame_models}:
                group = [m for m in frame_models if m.frame_table == shared]
                union = sorted({k for m in group for k in missing[m.name]}, key=key_str)
                for name, new in _embed_frames(store, union, group, batch * store.clip_frames).items():
                    tables[name].update(new)
        else:
            for m in frame_models:
                tables[m.name].update(_embed_frames_of_clips(missing[m.name], m, batch, read))
    for m in models:
        if missing[m.name]:
            cache.save(m, tables[m.name])
    out = {}
    for m in models:
        rows = [tables[m.name][key_str(k)] for k in keys]
        out[m.name] = ClipFeatures(np.stack([r[0] for r in rows]).astype(np.float32),
                                   np.stack([r[1] for r in rows]).astype(np.float32))
    return out
