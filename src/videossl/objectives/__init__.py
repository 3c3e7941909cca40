"""Pretraining objectives. `build` turns the pretrain params into (objective, recipe) for a variant.

`pretrain.objective` names one objective or weights several ({mae: 1.0, pretext: 0.5}); all parts
share one encoder. The frame encoder (variant "frames", T=1, the bag-of-frames baseline) trains with
`pretrain.baseline_objective` (mae or contrastive): the temporal objectives have no time to use.
"""
from __future__ import annotations

from videossl.config import Config
from videossl.models.vit import VideoViT
from videossl.objectives.base import Combined, CombinedRecipe, Objective, Recipe
from videossl.objectives.contrastive import Contrastive, ContrastiveRecipe
from videossl.objectives.jepa import JEPA, JEPARecipe
from videossl.objectives.mae import MAE, MAERecipe
from videossl.objectives.pretext import Pretext, PretextRecipe
from videossl.objectives.pretext_contrastive import CONTRASTIVE, PRETEXT, PretextContrastive, PretextContrastiveRecipe


def _future(cfg: Config, frames: int) -> bool:
    """The video encoder's mae/jepa predict the clip's second half (`pretrain.masking: future`); a
    single frame has no future, so the frame encoder keeps tube masks."""
    return cfg.pretrain.masking == "future" and frames > 1


def _mae(cfg: Config, encoder: VideoViT) -> tuple[Objective, Recipe]:
    shape = encoder.shape
    # a video hides 90% of its tubes (VideoMAE: neighbouring frames give the rest away); a single frame
    # has no neighbours, so the frame encoder masks at the image MAE's ratio
    ratio = cfg.pretrain.mask_ratio if shape.frames > 1 else cfg.pretrain.baseline_mask_ratio
    return (MAE(encoder, cfg.model.decoder_dim, cfg.model.decoder_depth, cfg.model.decoder_heads,
                cfg.pretrain.normalize_targets),
            MAERecipe(shape.frames, shape.grid, ratio, _future(cfg, shape.frames)))


def _jepa(cfg: Config, encoder: VideoViT) -> tuple[Objective, Recipe]:
    j, shape = cfg.pretrain.jepa, encoder.shape
    return (JEPA(encoder, j.predictor_dim, j.predictor_depth, j.predictor_heads, j.ema_start, j.ema_end),
            JEPARecipe(shape.frames, shape.grid, j.target_ratio, j.block_scale, j.block_aspect,
                       _future(cfg, shape.frames)))


def _pretext(cfg: Config, encoder: VideoViT) -> tuple[Objective, Recipe]:
    p = cfg.pretrain.pretext
    recipe = PretextRecipe(encoder.shape.frames, p.speeds, p.tasks, p.shuffle_prob)
    return Pretext(encoder, recipe.tasks, len(recipe.speeds)), recipe


def _contrastive(cfg: Config, encoder: VideoViT) -> tuple[Objective, Recipe]:
    c = cfg.pretrain.contrastive
    return (Contrastive(encoder, c.proj_dim, c.temperature),
            ContrastiveRecipe(encoder.shape.frames, c.max_gap, c.crop_scale, c.flip, c.colour, c.background))


BUILDERS = {"mae": _mae, "jepa": _jepa, "pretext": _pretext, "contrastive": _contrastive}
FUSED = "pretext_contrastive"  # the pair on shared clips, as a part beside any others


def weights_of(objective: str | dict[str, float]) -> dict[str, float]:
    """Part -> weight in BUILDERS' order, whatever order the mapping was written in: building the parts
    draws their initial weights from one RNG, so the order of keys would change the model (the KFP
    pipeline passes params with sorted keys, params.yaml as written: both must train the same model)."""
    weights = {objective: 1.0} if isinstance(objective, str) else dict(objective)
    return {name: weights[name] for name in BUILDERS if name in weights} | weights


def build(cfg: Config, encoder: VideoViT, variant: str = "video") -> tuple[Objective, Recipe]:
    """(objective, recipe) of `variant`: "video" trains `pretrain.objective`, "frames" (the T=1 frame
    encoder) trains `pretrain.baseline_objective`."""
    if variant not in ("video", "frames"):
        raise ValueError(f"unknown variant {variant!r} (video or frames)")
    weights = weights_of(cfg.pretrain.objective if variant == "video" else cfg.pretrain.baseline_objective)
    parts = {name: BUILDERS[name](cfg, encoder) for name in weights}
    if cfg.pretrain.contrastive.pretext_views and {PRETEXT, CONTRASTIVE} <= set(parts):
        # one encoder pass for both (objectives/pretext_contrastive.py); its own weights inside
        (p, p_recipe), (c, c_recipe) = parts.pop(PRETEXT), parts.pop(CONTRASTIVE)
        pair = {k: weights.pop(k) for k in (PRETEXT, CONTRASTIVE)}
        parts[FUSED] = (PretextContrastive(encoder, p, c, pair), PretextContrastiveRecipe(p_recipe, c_recipe))
        weights[FUSED] = 1.0
    if len(parts) == 1:
        return next(iter(parts.values()))
    return (Combined(encoder, {n: p[0] for n, p in parts.items()}, weights),
            CombinedRecipe({n: p[1] for n, p in parts.items()}))
