"""Any encoder on the temporal benchmark: `videossl evaluate --encoder package.module:factory[=arg]`.

The contract (README "Evaluate any encoder"):
- `factory(spec: ClipSpec, arg: str | None) -> torch.nn.Module`: `spec` says what clips look like
  (frames, size, the normalisation); `arg` is the text after `=` (a local weights folder, a config
  name), or None.
- `module(x)`, with x float [B, 3, T, H, W] normalised by spec.mean / spec.std (exactly what
  videossl's own encoders get), returns either tokens [B, t, h, w, D] (time and space kept: the
  probes pool them the way they pool videossl's) or one vector per clip [B, F].

The module runs under torch.inference_mode, in eval mode, on the CPU (or where its parameters are).
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass

import torch

from videossl.data.transforms import PIXEL_MEAN, PIXEL_STD, to_model_input
from videossl.errors import StepError
from videossl.eval.features import FEATURE_VERSION, FeatureModel, grid_pool


class ExternalEncoderError(StepError):
    """The --encoder spec cannot be loaded or breaks the contract; the message says how."""


@dataclass(frozen=True)
class ClipSpec:
    frames: int
    size: int
    mean: tuple[float, float, float] = PIXEL_MEAN
    std: tuple[float, float, float] = PIXEL_STD


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """'pkg.mod:factory=arg' -> ('pkg.mod', 'factory', 'arg')."""
    target, _, arg = spec.partition("=")
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ExternalEncoderError(f"--encoder {spec!r}: expected package.module:factory[=argument]")
    return module, attr, arg or None


def name_of(spec: str) -> str:
    """A metrics-key-safe model name for the encoder: its factory's module, last part."""
    module, attr, _ = parse_spec(spec)
    base = module.rsplit(".", 1)[-1] if attr == "factory" else f"{module.rsplit('.', 1)[-1]}_{attr}"
    return "ext_" + "".join(c if c.isalnum() else "_" for c in base.lower())


def build(spec: str, clip: ClipSpec) -> torch.nn.Module:
    module, attr, arg = parse_spec(spec)
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ExternalEncoderError(f"--encoder {spec!r}: cannot import {module}:{attr} ({e})") from None
    encoder = factory(clip, arg)
    if not isinstance(encoder, torch.nn.Module):
        raise ExternalEncoderError(f"--encoder {spec!r}: the factory returned {type(encoder).__name__}, "
                                   "not a torch.nn.Module")
    return encoder.eval()


def weights_digest(module: torch.nn.Module) -> str:
    """What the features depend on: every parameter and buffer (the feature cache key)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def external_model(name: str, spec: str, encoder: torch.nn.Module, cells: int) -> FeatureModel:
    """The encoder as a FeatureModel: time-ordered space-pooled vectors and grid-pooled tokens from
    5-D tokens, as for videossl's own encoders; a [B, F] output is its own vector (and single token)."""
    def featurize(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = encoder(to_model_input(clips))
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.float()
        if out.ndim == 2:
            return out, out[:, None, :]
        if out.ndim != 5:
            raise ExternalEncoderError(f"--encoder {spec!r}: the module returned shape {tuple(out.shape)}; "
                                       "the contract is tokens [B, t, h, w, D] or vectors [B, F]")
        b, t, h, w, d = out.shape
        vectors = out.mean(dim=(2, 3)).flatten(1)  # [B, t * D]: space pooled, time order kept
        return vectors, grid_pool(out.reshape(b, t * h * w, d), (t, h, w), cells)

    identity = f"external|{spec}|{weights_digest(encoder)}|cells={cells}|v{FEATURE_VERSION}"
    return FeatureModel(name, identity, featurize)


def external_models(specs: list[str], frames: int, size: int, cells: int) -> list[FeatureModel]:
    clip = ClipSpec(frames, size)
    names = [name_of(s) for s in specs]
    if len(set(names)) != len(names):
        raise ExternalEncoderError(f"--encoder: two encoders would share a name ({names}); use distinct factories")
    return [external_model(n, s, build(s, clip), cells) for n, s in zip(names, specs)]
