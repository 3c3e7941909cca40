"""Published video ViT checkpoints (`.pth`) as videossl's VideoViT: V-JEPA's and VideoMAE / VideoMAEv2's.

Both are the same pre-norm ViT as videossl's (models/vit.py: a Conv3d tubelet embedding, blocks of
LayerNorm -> attention with one qkv projection -> LayerNorm -> GELU MLP, a final LayerNorm); they
differ in key names and in three details this module carries over:
- keys: `patch_embed.proj` -> `patch_embed`, `mlp.fc1`/`mlp.fc2` -> `mlp.0`/`mlp.2`; a checkpoint's
  wrappers are taken apart (V-JEPA: the `target_encoder` entry, as its evals read it, else `encoder`;
  VideoMAE: `model` / `module`) and the prefixes DDP and the pretraining wrappers add (`module.`,
  `backbone.`, `encoder.`) are stripped; decoders, predictors and classifier heads are left out.
- VideoMAE's attention has separate q and v biases and no k bias: the qkv bias is [q, 0, v].
- positions: V-JEPA stores its 3D sin-cos table (`pos_embed`), VideoMAE computes a 1D sinusoid table
  over the flattened tokens; either replaces videossl's own table in the model built here.
- LayerNorm eps 1e-6 (theirs) instead of torch's 1e-5.

Nothing is unpickled: the file is read with `torch.load(weights_only=True)`. The number of heads is
not in the weights: it is the ViT family's for the width (PUBLISHED_HEADS) unless given. The clip
shape (frames, size) is not either: it is given, and checked against a stored position table.
"""
from __future__ import annotations

import os
import re

import numpy as np
import torch

from videossl.errors import StepError
from videossl.models.vit import VideoViT, VitShape

LAYER_NORM_EPS = 1e-6
# the ViT family's heads per width (ViT-Ti/S/B/L/H/g/G): what V-JEPA's and VideoMAEv2's models use
PUBLISHED_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
WRAPPERS = ("target_encoder", "encoder", "model", "module", "state_dict")  # the entry that holds the weights, first found
PREFIXES = ("module.", "backbone.", "encoder.")
VJEPA, VIDEOMAE = "vjepa", "videomae"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_RENAMES = (("patch_embed.proj.", "patch_embed."), (".mlp.fc1.", ".mlp.0."), (".mlp.fc2.", ".mlp.2."))


class PublishedCheckpointError(StepError):
    pass


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder's weights of a published checkpoint, its wrappers and prefixes removed."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PublishedCheckpointError(f"{path}: no such file") from None
    except Exception as e:  # weights_only refuses pickled code; a damaged file fails here too
        raise PublishedCheckpointError(f"{path}: not a readable weights file ({str(e).splitlines()[0]})") from None
    while isinstance(raw, dict) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        inner = next((raw[k] for k in WRAPPERS if isinstance(raw.get(k), dict)), None)
        if inner is None:
            raise PublishedCheckpointError(f"{path}: no weights under any of {', '.join(WRAPPERS)} "
                                           f"(its entries: {', '.join(map(str, raw))})")
        raw = inner
    state = {}
    for key, value in raw.items():
        while key.startswith(PREFIXES):
            key = key[next(len(p) for p in PREFIXES if key.startswith(p)):]
        if isinstance(value, torch.Tensor):
            state[key] = value
    return state


def layout_of(state: dict[str, torch.Tensor]) -> str:
    if "blocks.0.attn.q_bias" in state:
        return VIDEOMAE
    if "blocks.0.attn.qkv.weight" in state and "patch_embed.proj.weight" in state:
        return VJEPA
    raise PublishedCheckpointError("not a V-JEPA or VideoMAE video ViT: no patch_embed.proj / blocks.N.attn.qkv "
                                   f"weights (keys such as {', '.join(list(state)[:5])})")


def shape_of(state: dict[str, torch.Tensor], frames: int, size: int, heads: int | None = None) -> VitShape:
    """The VideoViT shape of the weights, for clips of `frames` x `size`^2."""
    dim, _, tubelet, patch, _ = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
    heads = heads or PUBLISHED_HEADS.get(dim)
    if heads is None:
        raise PublishedCheckpointError(f"width {dim} is not a standard ViT's ({sorted(PUBLISHED_HEADS)}): give heads=")
    shape = VitShape(frames=frames, img_size=size, patch=patch, tubelet=tubelet, dim=dim, depth=depth, heads=heads,
                     mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / dim)
    stored = state.get("pos_embed")
    if stored is not None and stored.shape[-2] != shape.num_tokens:
        raise PublishedCheckpointError(f"its position table has {stored.shape[-2]} tokens, but {frames} frames at "
                                       f"{size} px make {shape.num_tokens} (tubelet {tubelet}, patch {patch}): give "
                                       f"the frames and size it was trained at")
    return shape


def sinusoid_table(tokens: int, dim: int) -> torch.Tensor:
    """VideoMAE's position table: one sinusoid per channel pair over the flattened token index."""
    angles = np.arange(tokens)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None]
    angles[:, 0::2], angles[:, 1::2] = np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])
    return torch.from_numpy(angles).float()[None]


def videossl_state(state: dict[str, torch.Tensor], layout: str, depth: int) -> dict[str, torch.Tensor]:
    """Their encoder's weights under VideoViT's names (no position table: a buffer of its own)."""
    out = {}
    for key, value in state.items():
        if not (key.startswith(("patch_embed.", "blocks.", "norm.")) or (key.startswith("fc_norm.") and
                                                                          "norm.weight" not in state)):
            continue  # heads, decoders, predictors, mask tokens, the stored position table
        key = key.replace("fc_norm.", "norm.", 1) if key.startswith("fc_norm.") else key
        for old, new in _RENAMES:
            key = key.replace(old, new)
        if key.endswith(("attn.q_bias", "attn.v_bias")):
            continue
        out[key] = value
    if layout == VIDEOMAE:
        for i in range(depth):
            q, v = state[f"blocks.{i}.attn.q_bias"], state[f"blocks.{i}.attn.v_bias"]
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return out


def load_published(path: str | os.PathLike, frames: int, size: int, heads: int | None = None) -> tuple[VideoViT, dict]:
    """A VideoViT with the checkpoint's weights, position table and LayerNorm eps, in eval mode, and
    what was read ({"layout", "shape", "source"})."""
    state = read_state(path)
    layout = layout_of(state)
    shape = shape_of(state, frames, size, heads)
    model = VideoViT(shape)
    try:
        model.load_state_dict(videossl_state(state, layout, shape.depth))
    except RuntimeError as e:
        raise PublishedCheckpointError(f"{path}: its {layout} weights do not fit {shape}: {str(e).splitlines()[0]}") from None
    table = state.get("pos_embed") if layout == VJEPA else sinusoid_table(shape.num_tokens, shape.dim)
    if table is not None:  # a V-JEPA file without its table (never seen in a release) keeps videossl's sin-cos
        with torch.no_grad():
            model.pos_embed.copy_(table.reshape(model.pos_embed.shape))
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = LAYER_NORM_EPS
    return model.eval(), {"layout": layout, "shape": shape.as_dict(), "source": str(path),
                          "heads_from": "given" if heads else f"ViT width {shape.dim}"}

