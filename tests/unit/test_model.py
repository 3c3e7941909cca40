"""The video ViT contract, tube masks, the MAE objective and self-describing checkpoints."""
import numpy as np
import pytest
import torch

from videossl.masks import tube_masks
from videossl.models.checkpoint import CheckpointError, load_checkpoint, load_encoder, save_checkpoint
from videossl.models.vit import VideoViT, VitShape
from videossl.objectives.mae import MAE, normalised_targets, patchify

SHAPE = VitShape(frames=4, img_size=16, patch=4, tubelet=2, dim=24, depth=2, heads=2)


def _video(b=2, shape=SHAPE, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, shape.frames, shape.img_size, shape.img_size, generator=g)


def test_encoder_contract_and_visible_tokens_only():
    torch.manual_seed(0)
    enc = VideoViT(SHAPE).eval()
    x = _video()
    assert SHAPE.num_tokens == 2 * 4 * 4
    assert enc(x).shape == (2, SHAPE.num_tokens, SHAPE.dim)
    keep = torch.tensor([[0, 5, 9], [1, 2, 31]])
    assert enc(x, keep=keep).shape == (2, 3, SHAPE.dim)
    assert enc.embed(x).shape == (2, SHAPE.dim)
    assert enc.embed_time(x).shape == (2, SHAPE.grid[0], SHAPE.dim)


def test_video_encoder_sees_order():
    # (the bag of frames' blindness to order is tested on the benchmark's own featurizer:
    # tests/integration/test_probe_eval.py::test_bag_of_frames_is_exactly_blind_to_frame_order)
    torch.manual_seed(0)
    video = VideoViT(SHAPE).eval()
    x = _video()
    with torch.no_grad():
        assert not torch.allclose(video.embed(x), video.embed(x.flip(2)), atol=1e-4)


def test_tube_masks_hide_the_same_positions_in_every_time_slice():
    grid = (4, 8, 8)
    m = tube_masks(3, grid, 0.9, np.random.default_rng(0))
    spatial = 64
    assert m.keep.shape == (3, 4 * 6) and m.masked.shape == (3, 4 * 58)
    for b in range(3):
        keep = set(m.keep[b].tolist())
        assert keep.isdisjoint(m.masked[b].tolist())
        assert len(keep | set(m.masked[b].tolist())) == 4 * spatial
        per_slice = [sorted(i % spatial for i in keep if i // spatial == t) for t in range(4)]
        assert all(p == per_slice[0] for p in per_slice)
    with pytest.raises(ValueError, match="mask ratio"):
        tube_masks(1, grid, 0.999, np.random.default_rng(0))


def test_patchify_order_matches_the_encoder_tokens():
    x = _video(1)
    p = patchify(x, SHAPE.tubelet, SHAPE.patch)
    assert p.shape == (1, SHAPE.num_tokens, SHAPE.patch_dim)
    # token 0 is time-slice 0, top-left patch: the first tubelet*patch*patch pixels of that corner
    corner = x[0, :, :2, :4, :4].permute(1, 2, 3, 0).reshape(-1)
    assert torch.equal(p[0, 0], corner)
    t = normalised_targets(x, SHAPE)
    assert torch.allclose(t.mean(-1), torch.zeros(1, SHAPE.num_tokens), atol=1e-5)


def test_mae_loss_depends_only_on_masked_tokens():
    torch.manual_seed(0)
    mae = MAE(VideoViT(SHAPE), 16, 1, 2, normalize_targets=True)
    x = _video(1)
    m = tube_masks(1, SHAPE.grid, 0.75, np.random.default_rng(1))
    loss = mae.loss(x, m)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert mae.encoder.patch_embed.weight.grad.abs().sum() > 0
    # Pixels of a hidden tube are targets only (the encoder never sees them): changing them changes
    # the loss through the target alone.
    t, rem = divmod(int(m.masked[0, 0]), 16)
    h, w = divmod(rem, 4)
    x2 = x.clone()
    x2[0, :, t * 2:(t + 1) * 2, h * 4:(h + 1) * 4, w * 4:(w + 1) * 4] = torch.randn(3, 2, 4, 4)
    with torch.no_grad():
        assert not torch.isclose(mae.loss(x2, m), mae.loss(x, m))
        assert torch.equal(mae.encoder(x2, keep=m.keep), mae.encoder(x, keep=m.keep))


def test_checkpoint_roundtrip_is_self_describing(tmp_path):
    torch.manual_seed(0)
    enc = VideoViT(SHAPE)
    path = tmp_path / "ckpt" / "encoder.pt"
    save_checkpoint({"variant": "video", "shape": SHAPE.as_dict(), "encoder": enc.state_dict(), "step": 7}, path)
    assert [p.name for p in path.parent.iterdir()] == ["encoder.pt"]  # no temp file left behind
    loaded, meta = load_encoder(path)
    assert meta["step"] == 7 and meta["num_frames"] == 4 and meta["variant"] == "video"
    x = _video()
    with torch.no_grad():
        assert torch.equal(loaded(x), enc.eval()(x))


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(CheckpointError, match="not a videossl checkpoint"):
        load_checkpoint(other)


def test_plain_pixel_targets_reach_zero_loss_only_with_the_right_pixels():
    # With normalize_targets=False the target is the masked patches' pixels themselves.
    torch.manual_seed(0)
    mae = MAE(VideoViT(SHAPE), 16, 1, 2, normalize_targets=False)
    x = torch.zeros(1, 3, SHAPE.frames, SHAPE.img_size, SHAPE.img_size)
    m = tube_masks(1, SHAPE.grid, 0.75, np.random.default_rng(1))
    with torch.no_grad():
        torch.nn.init.zeros_(mae.decoder.head.weight)
        torch.nn.init.zeros_(mae.decoder.head.bias)
        assert mae.loss(x, m) == 0  # predicting zeros for an all-zero clip is exact
        assert mae.loss(x + 1.0, m) == pytest.approx(1.0)


def test_embedding_only_visible_tubelets_equals_embedding_all_then_gathering():
    torch.manual_seed(0)
    enc = VideoViT(SHAPE)
    x = _video()
    keep = torch.tensor([[0, 5, 9, 31], [1, 2, 17, 30]])
    full = enc.patch_embed(x).flatten(2).transpose(1, 2) + enc.pos_embed
    expected = torch.gather(full, 1, keep[..., None].expand(-1, -1, SHAPE.dim))
    assert torch.allclose(enc.embed_visible(x, keep), expected, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_bf16_attention_matches_sdpa(masked):
    """Under CPU bf16 autocast `attend` takes explicit matmuls (faster on AMX); it must compute the
    same attention as SDPA in fp32, causal mask included, up to bf16 rounding (8 mantissa bits)."""
    from videossl.models.vit import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 16, generator=g) for _ in range(3))
    mask = (torch.arange(20)[None, :] // 5 <= torch.arange(20)[:, None] // 5) if masked else None
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attend(q, k, v, mask).float()
    assert torch.allclose(got, reference, atol=3e-2, rtol=3e-2)
    assert (got - reference).abs().mean() < 5e-3
