"""Any encoder on the temporal benchmark: `videossl evaluate --encoder package.module:factory[=arg]`.

The contract (README "Evaluate any encoder"):
- `factory(spec: ClipSpec, arg: str | None) -> torch.nn.Module`: `spec` says what clips look like
  (frames, size, the normalisation); `arg` is the text after `=` (a local weights folder, a config
  name), or None.
- `module(x)`, with x float [B, 3, T, H, W] normalised by spec.mean / spec.std (exactly what
  videossl's own encoders get), returns either tokens [B, t, h, w, D] (time and space kept: the
  probes pool them the way they pool videossl's) or one vector per clip [B, F].

The module runs under torch.inference_mode, in eval mode, on the CPU (or where its parameters are).

Without videossl's own models (`videossl evaluate` with only --encoder), the first encoder is the
subject and its baselines are made from it (`subject_baselines`): its bag of frames and ordered
frames (the same encoder seeing each frame alone, as a still clip) and its architecture at random
initialisation.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
from dataclasses import dataclass

import torch

from videossl.data.transforms import PIXEL_MEAN, PIXEL_STD, to_model_input
from videossl.errors import StepError
from videossl.eval.features import FEATURE_VERSION, MEAN_FRAMES, ORDERED_FRAMES, FeatureModel, grid_pool

# A parameter no module resets (a class token, a learned position table) is redrawn from N(0, this^2):
# the ViT family's own initialisation scale
REINIT_STD = 0.02


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


def _views(spec: str, out) -> tuple[torch.Tensor, tuple[int, int, int] | None]:
    """The module's output as (tokens [B, t*h*w, D], grid) or, for a [B, F] output, (vectors, None)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    out = out.float()
    if out.ndim == 2:
        return out, None
    if out.ndim != 5:
        raise ExternalEncoderError(f"--encoder {spec!r}: the module returned shape {tuple(out.shape)}; "
                                   "the contract is tokens [B, t, h, w, D] or vectors [B, F]")
    b, t, h, w, d = out.shape
    return out.reshape(b, t * h * w, d), (t, h, w)


def external_model(name: str, spec: str, encoder: torch.nn.Module, cells: int) -> FeatureModel:
    """The encoder as a FeatureModel: time-ordered space-pooled vectors and grid-pooled tokens from
    5-D tokens, as for videossl's own encoders; a [B, F] output is its own vector (and single token)."""
    def featurize(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, grid = _views(spec, encoder(to_model_input(clips)))
        if grid is None:
            return tokens, tokens[:, None, :]
        b, _, d = tokens.shape
        vectors = tokens.view(b, grid[0], -1, d).mean(2).flatten(1)  # [B, t * D]: space pooled, time order kept
        return vectors, grid_pool(tokens, grid, cells)

    identity = f"external|{spec}|{weights_digest(encoder)}|cells={cells}|v{FEATURE_VERSION}"
    return FeatureModel(name, identity, featurize)


def frame_model(name: str, spec: str, encoder: torch.nn.Module, frames: int, cells: int, how: str,
                digest: str | None = None) -> FeatureModel:
    """The encoder on each frame alone: the frame repeated `frames` times (a still clip, what it takes),
    its tokens averaged over time; a clip is then the mean of its frames' features (MEAN_FRAMES, the
    bag of frames: order-free by construction) or their concatenation in order (ORDERED_FRAMES).
    `digest`: the encoder's weights_digest, when the caller has it (hashing a large model takes seconds)."""
    def featurize(single: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        still = single.expand(-1, frames, -1, -1, -1)  # [B, 1, H, W, 3] -> [B, T, H, W, 3], no copy
        tokens, grid = _views(spec, encoder(to_model_input(still)))
        if grid is None:
            return tokens, tokens[:, None, :]
        b, _, d = tokens.shape
        space = tokens.view(b, grid[0], -1, d).mean(1)  # [B, h*w, D]: one time slice, the still frame's
        return space.mean(1), grid_pool(space, (1, *grid[1:]), cells)

    table = f"external-frames|{spec}|{digest or weights_digest(encoder)}|frames={frames}|cells={cells}"
    return FeatureModel(name, f"{table}|{how}|v{FEATURE_VERSION}", featurize, per_frame=how, frame_table=table)


def reinitialised(encoder: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of the encoder at random initialisation: every module that can reset its parameters does
    (seeded), and every parameter none resets is redrawn from N(0, REINIT_STD^2), so no trained weight
    is left."""
    fresh = copy.deepcopy(encoder)
    torch.manual_seed(seed)
    reset: set[int] = set()
    for module in fresh.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
            reset.update(id(p) for p in module.parameters(recurse=False))
    with torch.no_grad():
        for p in fresh.parameters():
            if id(p) not in reset:
                p.normal_(0.0, REINIT_STD)
    return fresh.eval()


def subject_baselines(spec: str, encoder: torch.nn.Module, frames: int, cells: int, seeds: list[int],
                      names: tuple[str, str, str]) -> list[FeatureModel]:
    """The baselines an external subject is read against when no videossl model is there: its bag of
    frames, its ordered frames and its architecture at random initialisation (one model per seed, named
    `<names[2]>_<i>`)."""
    bag, ordered, random_init = names
    digest = weights_digest(encoder)  # once for both readings of its frames
    return ([frame_model(bag, spec, encoder, frames, cells, MEAN_FRAMES, digest),
             frame_model(ordered, spec, encoder, frames, cells, ORDERED_FRAMES, digest)]
            + [external_model(f"{random_init}_{i}", spec, reinitialised(encoder, seed), cells)
               for i, seed in enumerate(seeds)])


def external_models(specs: list[str], frames: int, size: int, cells: int,
                    baselines: tuple[list[int], tuple[str, str, str]] | None = None) -> list[FeatureModel]:
    """The encoders as FeatureModels, in order; with `baselines` (random-init seeds, the baselines'
    names) the first encoder's own baselines follow it (subject_baselines)."""
    clip = ClipSpec(frames, size)
    names = [name_of(s) for s in specs]
    if len(set(names)) != len(names):
        raise ExternalEncoderError(f"--encoder: two encoders would share a name ({names}); use distinct factories")
    encoders = [build(s, clip) for s in specs]
    models = [external_model(n, s, e, cells) for n, s, e in zip(names, specs, encoders)]
    if baselines is None:
        return models
    seeds, labels = baselines
    return models[:1] + subject_baselines(specs[0], encoders[0], frames, cells, seeds, labels) + models[1:]
