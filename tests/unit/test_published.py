"""Published checkpoints (V-JEPA's and VideoMAE's `.pth` layouts) as videossl's VideoViT: written here
in each layout, read back, and run against a reference forward written from the layouts' own model
code (V-JEPA: src/models/vision_transformer.py; VideoMAE: modeling_finetune.py), not from videossl's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videossl.adapters.pth import factory
from videossl.eval.external import ClipSpec, ExternalEncoderError, external_models
from videossl.models.published import PublishedCheckpointError, load_published

FRAMES, SIZE, PATCH, TUBELET, DIM, DEPTH, HEADS = 4, 32, 8, 2, 48, 2, 3
TOKENS = (FRAMES // TUBELET) * (SIZE // PATCH) ** 2


def _weights(seed: int, videomae: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    w = {"patch_embed.proj.weight": r(DIM, 3, TUBELET, PATCH, PATCH), "patch_embed.proj.bias": r(DIM),
         "norm.weight": 1 + r(DIM), "norm.bias": r(DIM)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        w.update({b + "norm1.weight": 1 + r(DIM), b + "norm1.bias": r(DIM), b + "norm2.weight": 1 + r(DIM),
                  b + "norm2.bias": r(DIM), b + "attn.qkv.weight": r(3 * DIM, DIM), b + "attn.proj.weight": r(DIM, DIM),
                  b + "attn.proj.bias": r(DIM), b + "mlp.fc1.weight": r(4 * DIM, DIM), b + "mlp.fc1.bias": r(4 * DIM),
                  b + "mlp.fc2.weight": r(DIM, 4 * DIM), b + "mlp.fc2.bias": r(DIM)})
        if videomae:
            w.update({b + "attn.q_bias": r(DIM), b + "attn.v_bias": r(DIM)})
        else:
            w[b + "attn.qkv.bias"] = r(3 * DIM)
    return w


def _videomae_table() -> torch.Tensor:
    """VideoMAE's get_sinusoid_encoding_table, as its code writes it."""
    def angles(position):
        return [position / np.power(10000, 2 * (j // 2) / DIM) for j in range(DIM)]
    table = np.array([angles(p) for p in range(TOKENS)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)[None]


def _reference(w: dict[str, torch.Tensor], pos: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The published encoders' forward on their own keys: tubelet conv, + positions, pre-norm blocks
    (eps 1e-6), a final norm."""
    ln = lambda t, k: F.layer_norm(t, (DIM,), w[k + ".weight"], w[k + ".bias"], eps=1e-6)  # noqa: E731
    t = F.conv3d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=(TUBELET, PATCH, PATCH))
    t = t.flatten(2).transpose(1, 2) + pos
    b, n, _ = t.shape
    for i in range(DEPTH):
        k = f"blocks.{i}."
        bias = w.get(k + "attn.qkv.bias")
        if bias is None:
            bias = torch.cat([w[k + "attn.q_bias"], torch.zeros(DIM), w[k + "attn.v_bias"]])
        qkv = F.linear(ln(t, k + "norm1"), w[k + "attn.qkv.weight"], bias).reshape(b, n, 3, HEADS, DIM // HEADS)
        q, kk, v = qkv.permute(2, 0, 3, 1, 4)
        a = ((q @ kk.transpose(-2, -1)) * (DIM // HEADS) ** -0.5).softmax(-1) @ v
        t = t + F.linear(a.transpose(1, 2).reshape(b, n, DIM), w[k + "attn.proj.weight"], w[k + "attn.proj.bias"])
        h = F.gelu(F.linear(ln(t, k + "norm2"), w[k + "mlp.fc1.weight"], w[k + "mlp.fc1.bias"]))
        t = t + F.linear(h, w[k + "mlp.fc2.weight"], w[k + "mlp.fc2.bias"])
    return ln(t, "norm")


def _vjepa_file(tmp_path, pos: torch.Tensor):
    """V-JEPA's training checkpoint: DDP-prefixed encoder, target encoder and predictor, and the rest."""
    target, online = _weights(1, False), _weights(2, False)
    for w in (target, online):
        w["pos_embed"] = pos
    path = tmp_path / "vitt16.pth.tar"
    torch.save({"encoder": {f"module.{k}": v for k, v in online.items()},
                "target_encoder": {f"module.{k}": v for k, v in target.items()},
                "predictor": {"module.predictor_embed.weight": torch.zeros(4, DIM)}, "epoch": 3, "lr": 1e-3}, path)
    return path, target


def test_a_vjepa_checkpoint_runs_as_vjepa_runs_it_from_its_target_encoder(tmp_path):
    pos = torch.randn(1, TOKENS, DIM)  # its stored table, whatever it holds, is the one used
    path, target = _vjepa_file(tmp_path, pos)
    vit, info = load_published(path, FRAMES, SIZE, heads=HEADS)
    assert info["layout"] == "vjepa" and vit.shape.depth == DEPTH and vit.shape.mlp_ratio == 4.0
    x = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), _reference(target, pos, x), rtol=1e-4, atol=1e-4)
    with pytest.raises(PublishedCheckpointError, match="position table has 32 tokens, but 8 frames"):
        load_published(path, 8, SIZE, heads=HEADS)
    with pytest.raises(PublishedCheckpointError, match="not a standard ViT's"):
        load_published(path, FRAMES, SIZE)  # width 48 has no family default: heads must be given


def test_a_videomae_checkpoint_gets_its_q_v_biases_and_sinusoid_positions(tmp_path):
    w = _weights(3, True)
    path = tmp_path / "videomae.pth"
    decoder = {"decoder.blocks.0.norm1.weight": torch.ones(DIM), "encoder_to_decoder.weight": torch.zeros(DIM, DIM),
               "mask_token": torch.zeros(1, 1, DIM)}
    torch.save({"model": {**{f"encoder.{k}": v for k, v in w.items()}, **decoder}}, path)
    vit, info = load_published(path, FRAMES, SIZE, heads=HEADS)
    assert info["layout"] == "videomae"
    x = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), _reference(w, _videomae_table(), x), rtol=1e-4, atol=1e-4)


def test_the_pth_adapter_feeds_native_clips_and_refuses_what_it_cannot_read(tmp_path):
    path, _ = _vjepa_file(tmp_path, torch.randn(1, TOKENS, DIM))
    spec = f"videossl.adapters.pth:factory={path},frames={FRAMES},size={SIZE},heads={HEADS}"
    (model,) = external_models([spec], 8, 16, 2)  # the benchmark's 8 x 16^2 clips, resized to its 4 x 32^2
    vectors, tokens = model.featurize(torch.randint(0, 255, (2, 8, 16, 16, 3), dtype=torch.uint8))
    assert vectors.shape == (2, 2 * DIM) and tokens.shape == (2, 2 * 4, DIM)
    code = tmp_path / "code.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, code)  # a pickled module: never unpickled
    for arg, words in ((None, "needs a checkpoint"), (f"{path},fps=3", "not one of frames=N"),
                       (code, "not a readable weights file"), (tmp_path / "nope.pth", "no such file")):
        with pytest.raises(ExternalEncoderError, match=words):
            factory(ClipSpec(8, 16), None if arg is None else str(arg))
