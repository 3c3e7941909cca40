"""Pretraining objectives. `build` turns the pretrain params into (objective, recipe) for a variant.

`pretrain.objective` names one objective or weights several ({mae: 1.0, pretext: 0.5}); all parts
share one encoder.
"""
from __future__ import annotations

from videossl.config import Config
from videossl.models.vit import VideoViT
from videossl.objectives.base import Combined, CombinedRecipe, Objective, Recipe
from videossl.objectives.mae import MAE, MAERecipe


def _mae(cfg: Config, encoder: VideoViT) -> tuple[Objective, Recipe]:
    shape = encoder.shape
    return (MAE(encoder, cfg.model.decoder_dim, cfg.model.decoder_depth, cfg.model.decoder_heads,
                cfg.pretrain.normalize_targets),
            MAERecipe(shape.frames, shape.grid, cfg.pretrain.mask_ratio))


BUILDERS = {"mae": _mae}


def weights_of(objective: str | dict[str, float]) -> dict[str, float]:
    return {objective: 1.0} if isinstance(objective, str) else dict(objective)


def build(cfg: Config, encoder: VideoViT) -> tuple[Objective, Recipe]:
    weights = weights_of(cfg.pretrain.objective)
    parts = {name: BUILDERS[name](cfg, encoder) for name in weights}
    if len(parts) == 1:
        return next(iter(parts.values()))
    return (Combined(encoder, {n: p[0] for n, p in parts.items()}, weights),
            CombinedRecipe({n: p[1] for n, p in parts.items()}))
