"""Zero-shot surprise: the first half of a clip sees, the objective's own predictor fills in the second
half, its error is the surprise; a predictor trained on future masks is surprised by a swapped future."""
import numpy as np
import pytest
import torch

from videossl.data.transforms import to_model_input
from videossl.eval.surprise import held_frame_surprise, predictive_part, surprise
from videossl.masks import future_masks, tube_masks
from videossl.models.vit import VideoViT, VitShape
from videossl.objectives.base import Combined
from videossl.objectives.jepa import JEPA, JEPARecipe
from videossl.objectives.mae import MAE, MAERecipe, patchify
from videossl.objectives.pretext import Pretext

SHAPE = VitShape(frames=8, img_size=16, patch=4, tubelet=2, dim=32, depth=2, heads=2)  # 4 time slices
SIDE = 6  # px: the tiny world's square


def _clips(n=3, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, SHAPE.frames, 16, 16, 3), dtype=np.uint8))


def _gliding_squares(n: int, rng: np.random.Generator) -> np.ndarray:
    """A tiny world: one bright square, still or gliding 1 px a frame, on a dark torus [n, T, 16, 16, 3]."""
    out = np.zeros((n, SHAPE.frames, 16, 16, 3), np.uint8)
    for i in range(n):
        pos, vel = rng.uniform(0, 16, 2), rng.choice([-1.0, 0.0, 1.0], 2)
        colour = rng.integers(128, 256, 3)
        for t in range(SHAPE.frames):
            y, x = np.round(pos + vel * t).astype(int)
            out[i, t][np.ix_((y + np.arange(SIDE)) % 16, (x + np.arange(SIDE)) % 16)] = colour
    return out


def test_future_masks_show_the_first_half_and_hide_the_second():
    m = future_masks(2, SHAPE.grid)
    spatial = SHAPE.grid[1] * SHAPE.grid[2]
    assert m.keep.tolist() == [list(range(2 * spatial))] * 2
    assert m.masked.tolist() == [list(range(2 * spatial, 4 * spatial))] * 2
    with pytest.raises(ValueError, match="past"):
        future_masks(1, (1, 4, 4))


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


def test_surprise_is_the_error_of_the_second_half():
    """A decoder that predicts zeros: its error is the mean square of the second half's pixels (model input)."""
    torch.manual_seed(0)
    mae = MAE(VideoViT(SHAPE), 16, 1, 2, normalize_targets=False).eval()
    with torch.no_grad():
        torch.nn.init.zeros_(mae.decoder.head.weight)
        torch.nn.init.zeros_(mae.decoder.head.bias)
    clips = _clips()
    tokens = patchify(to_model_input(clips), SHAPE.tubelet, SHAPE.patch)
    half = tokens.shape[1] // 2
    np.testing.assert_allclose(surprise(mae, clips, batch=2), (tokens[:, half:] ** 2).mean((1, 2)).numpy(), rtol=1e-5)


def test_the_held_frame_predictor_is_surprised_by_what_changes_after_the_last_seen_frame():
    """The non-learned baseline: the last frame of the seen half (2 time slices x tubelet 2 = frame 3)
    held through frames 4-7; a still clip surprises it not at all, a gliding square does, a clip that
    changes only before frame 3 does not."""
    mae = MAE(VideoViT(SHAPE), 16, 1, 2, normalize_targets=False)
    clips = torch.zeros(3, SHAPE.frames, 16, 16, 3, dtype=torch.uint8)
    clips[1, 4:, :4, :4] = 255   # a square appears in the unseen half: 16 of 256 pixels in every frame
    clips[2, :3, :4, :4] = 255   # it vanishes before the last seen frame
    np.testing.assert_allclose(held_frame_surprise(clips, mae), [0.0, 16 / 256, 0.0], atol=1e-7)


def test_only_objectives_that_predict_have_surprise():
    enc = VideoViT(SHAPE)
    mae, pretext = MAE(enc, 16, 1, 2, False), Pretext(enc, ["arrow"], 3)
    assert predictive_part(mae) is mae and predictive_part(pretext) is None
    assert predictive_part(Combined(enc, {"pretext": pretext, "mae": mae}, {"pretext": 1.0, "mae": 1.0})) is mae


@pytest.mark.parametrize("name", ["mae", "jepa"])
def test_a_predictor_trained_on_future_masks_is_surprised_by_a_swapped_future(name):
    """Trained with `pretrain.masking: future` on gliding squares, the objective's surprise is higher
    when a clip's second half is another clip's (the square jumps) than for the clip itself."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    enc = VideoViT(SHAPE)
    if name == "mae":
        objective, recipe = MAE(enc, 32, 1, 2, False), MAERecipe(SHAPE.frames, SHAPE.grid, 0.9, future=True)
    else:
        objective = JEPA(enc, 32, 1, 2, 0.99, 1.0)
        recipe = JEPARecipe(SHAPE.frames, SHAPE.grid, 0.75, (0.15, 0.3), (0.75, 1.5), future=True)
    opt = torch.optim.AdamW(objective.parameters(), lr=2e-3)
    steps = 800  # measured: both separate the swapped futures from about step 500 (MAE 0.98, JEPA 0.91 at 600)
    for step in range(steps):
        batch = recipe.collate([{"clip": c} for c in _gliding_squares(32, rng)], [rng] * 32)
        loss, _ = objective(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        objective.after_step(step, steps)
    objective.eval()
    clips = _gliding_squares(64, np.random.default_rng(1))
    swapped = clips.copy()
    swapped[:, SHAPE.frames // 2:] = np.roll(clips, 1, axis=0)[:, SHAPE.frames // 2:]  # another clip's future
    true_s, swapped_s = surprise(objective, torch.from_numpy(clips)), surprise(objective, torch.from_numpy(swapped))
    assert (swapped_s > true_s).mean() >= 0.8, (name, (swapped_s > true_s).mean())  # measured 1.00 / 0.94
    assert swapped_s.mean() > true_s.mean()
