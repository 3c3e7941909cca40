"""Training hygiene: one optimizer builder, gradient clipping with a device-side non-finite skip, and
one batch-split rule for every place that splits a batch."""
from __future__ import annotations

import pytest
import torch

from tests.tiny import tiny_config
from videossl import objectives
from videossl.config import ConfigError
from videossl.models.checkpoint import encoder_shape
from videossl.models.vit import VideoViT
from videossl.train import loop
from videossl.train.batching import BatchSplit, split_batch
from videossl.train.optim import build_optimizer, param_groups


def test_weight_decay_is_only_on_weight_matrices(tmp_path):
    cfg = tiny_config(tmp_path, "pretrain.objective={mae: 1.0, jepa: 1.0, pretext: 1.0, contrastive: 1.0}")
    model, _ = objectives.build(cfg, VideoViT(encoder_shape(cfg.model, "video", 8, 32)), "video")
    decay, rest = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in rest["params"]}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert any(n.endswith("mask_token") for n in no_decay)  # the MAE decoder's and the JEPA predictor's
    assert all(n.endswith(("bias", "mask_token")) or ".norm" in n or "norm1" in n or "norm2" in n for n in no_decay)
    assert len(decay["params"]) + len(rest["params"]) == sum(p.requires_grad for p in model.parameters())
    optimizer = build_optimizer(model, 1e-3, 0.05)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0] and optimizer.defaults["fused"]


def test_a_non_finite_gradient_skips_the_step_on_the_device():
    model = torch.nn.Linear(4, 2)
    optimizer = build_optimizer(model, 0.1, 0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (model(torch.randn(3, 4)).sum() * float("nan")).backward()
    norm = loop.clip_and_check(model, optimizer, scaler, 1.0)
    assert not torch.isfinite(norm) and optimizer.found_inf.item() == 1.0
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing moved
    optimizer.zero_grad()
    (model(torch.randn(3, 4)).sum() * 100).backward()
    norm = loop.clip_and_check(model, optimizer, scaler, 1.0)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert norm > 1.0 and grads.norm() == pytest.approx(1.0, rel=1e-5)  # clipped to the max norm
    optimizer.step()
    assert not torch.equal(before["weight"], model.weight)


@pytest.mark.parametrize("batch, world, micro, objectives_, expected", [
    (32, 1, None, {"mae"}, BatchSplit(32, 1, 32, 32, 1)),
    (32, 4, 4, {"contrastive"}, BatchSplit(32, 4, 8, 4, 2)),
    (16, 16, None, {"mae"}, BatchSplit(16, 16, 1, 1, 1)),  # one clip a rank is fine for MAE
])
def test_split_batch(batch, world, micro, objectives_, expected):
    assert split_batch(batch, world, micro, objectives_) == expected


@pytest.mark.parametrize("batch, world, micro, objectives_, message", [
    (16, 16, None, {"contrastive"}, r"pretrain.batch_size \(16\) / pretrain.nproc \(16\) gives every forward pass 1"),
    (32, 2, 1, {"pretext", "contrastive"}, r"pretrain.micro_batch \(1\) gives every forward pass 1 clip.*contrastive"),
    (10, 3, None, {"mae"}, r"pretrain.batch_size \(10\) must be divisible"),
    (12, 2, 4, {"mae"}, r"pretrain.micro_batch \(4\) must divide"),
])
def test_split_batch_refuses_what_cannot_work_naming_the_keys(batch, world, micro, objectives_, message):
    with pytest.raises(ValueError, match=message):
        split_batch(batch, world, micro, objectives_)


def test_config_validation_uses_the_same_rule(tmp_path):
    with pytest.raises(ConfigError, match=r"'pretrain.batch_size'.*contrastive needs at least 2"):
        tiny_config(tmp_path, "pretrain.baseline_objective=contrastive", "pretrain.nproc=4", "pretrain.batch_size=4")
    assert tiny_config(tmp_path, "pretrain.objective=contrastive", "pretrain.nproc=2", "pretrain.batch_size=4")
