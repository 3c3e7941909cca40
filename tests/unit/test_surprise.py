"""Zero-shot surprise: the past sees, the next slice is predicted, the objective's own error is read."""
import numpy as np
import pytest
import torch

from videossl.data.transforms import to_model_input
from videossl.eval.surprise import predictive_part, surprise
from videossl.masks import next_slice_masks, tube_masks
from videossl.models.vit import VideoViT, VitShape
from videossl.objectives.base import Combined
from videossl.objectives.jepa import JEPA
from videossl.objectives.mae import MAE, patchify
from videossl.objectives.pretext import Pretext

SHAPE = VitShape(frames=8, img_size=16, patch=4, tubelet=2, dim=24, depth=2, heads=2)  # 4 time slices


def _clips(n=3, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, SHAPE.frames, 16, 16, 3), dtype=np.uint8))


def test_next_slice_masks_show_the_past_and_hide_the_next_slice_only():
    m = next_slice_masks(2, SHAPE.grid, 2)
    spatial = SHAPE.grid[1] * SHAPE.grid[2]
    assert m.keep.tolist() == [list(range(2 * spatial))] * 2
    assert m.masked.tolist() == [list(range(2 * spatial, 3 * spatial))] * 2
    for bad in (0, SHAPE.grid[0]):
        with pytest.raises(ValueError, match="past"):
            next_slice_masks(1, SHAPE.grid, bad)


def test_a_clips_error_terms_average_to_the_loss():
    torch.manual_seed(0)
    x = to_model_input(_clips())
    m = tube_masks(3, SHAPE.grid, 0.75, np.random.default_rng(0))
    mae = MAE(VideoViT(SHAPE), 16, 1, 2, normalize_targets=True)
    jepa = JEPA(VideoViT(SHAPE), 16, 1, 2, 0.99, 1.0)
    with torch.no_grad():
        assert mae.clip_errors(x, m).shape == (3,)
        assert torch.allclose(mae.clip_errors(x, m).mean(), mae.loss(x, m))
        assert torch.allclose(jepa.loss_parts(x, m)[0].mean(), jepa.loss(x, m))


def test_surprise_is_the_largest_next_slice_error():
    """A decoder that predicts zeros: its error on a slice is the mean square of that slice's pixels
    (model input), so surprise is the largest of the slices after the first."""
    torch.manual_seed(0)
    mae = MAE(VideoViT(SHAPE), 16, 1, 2, normalize_targets=False).eval()
    with torch.no_grad():
        torch.nn.init.zeros_(mae.decoder.head.weight)
        torch.nn.init.zeros_(mae.decoder.head.bias)
    clips = _clips()
    clips[1, 6:] = 255  # a flash in the last slice: the most surprising clip
    spatial = SHAPE.grid[1] * SHAPE.grid[2]
    tokens = patchify(to_model_input(clips), SHAPE.tubelet, SHAPE.patch)
    per_slice = (tokens ** 2).view(3, SHAPE.grid[0], spatial, -1).mean((2, 3))
    got = surprise(mae, clips, batch=2)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, per_slice[:, 1:].max(1).values.numpy(), rtol=1e-5)
    assert got.argmax() == 1


def test_only_objectives_that_predict_have_surprise():
    enc = VideoViT(SHAPE)
    mae, pretext = MAE(enc, 16, 1, 2, False), Pretext(enc, ["arrow"], 3)
    assert predictive_part(mae) is mae and predictive_part(pretext) is None
    assert predictive_part(Combined(enc, {"pretext": pretext, "mae": mae}, {"pretext": 1.0, "mae": 1.0})) is mae
    jepa = JEPA(VideoViT(SHAPE), 16, 1, 2, 0.99, 1.0).eval()
    s = surprise(jepa, _clips())
    assert s.shape == (3,) and np.isfinite(s).all() and (s > 0).all()
