"""The pretraining objectives (jepa, pretext, contrastive, combinations) and causal-in-time attention,
on a tiny world rendered straight to clip shards (tests/worlds.py: no codec, no ingest). Every
objective overfits a fixed batch: finite loss going down, gradients reaching the encoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny import tiny_config
from tests.worlds import write_world
from videossl import objectives
from videossl.config import ConfigError
from videossl.data.shards import ClipStore
from videossl.masks import multiblock_masks
from videossl.models.checkpoint import encoder_shape
from videossl.models.vit import VideoViT, VitShape
from videossl.objectives.base import Combined
from videossl.objectives.contrastive import PAIR, STATIC, Contrastive, View, augment, draw_view, info_nce
from videossl.objectives.jepa import JEPA, JEPARecipe
from videossl.objectives.mae import MAE
from videossl.objectives.pretext import IGNORE, Pretext, PretextRecipe
from videossl.objectives.pretext_contrastive import PretextContrastive
from videossl.train.data import ClipDataset, Collator, Item


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The tiny config's pretraining pool, rendered straight to clip shards (no codec, no ingest)."""
    cfg = tiny_config(tmp_path_factory.mktemp("cfg"))
    pool = write_world(tmp_path_factory.mktemp("pool"), cfg.ingest.synthetic, "pool", cfg.ingest.clip_frames)
    return ClipStore(pool)


def _build(tmp_path, store, *overrides, variant="video", seed=0):
    cfg = tiny_config(tmp_path, *overrides)
    torch.manual_seed(seed)
    shape = encoder_shape(cfg.model, variant, store.clip_frames, store.size)
    model, recipe = objectives.build(cfg, VideoViT(shape), variant)
    return cfg, model, recipe


def _batch(store, recipe, variant="video", n=4, step=0):
    """A real collated batch of `n` examples spread over the training set."""
    ds = ClipDataset(store, variant, recipe, seed=0)
    picks = np.linspace(0, len(ds) - 1, n).astype(int)
    return Collator(recipe, seed=0)([ds[Item(step, p, int(i))] for p, i in enumerate(picks)])


def _overfit(model, batch, steps=12, lr=2e-3):
    """Optimizer steps on one fixed batch: the losses (+ one after the last step) and the final logs;
    checks the encoder gets gradients."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for step in range(steps):
        loss, logs = model(batch)
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads = [p.grad for p in model.encoder.parameters()]
            assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
        opt.step()
        model.after_step(step, steps)
        losses.append(loss.item())
    with torch.no_grad():
        loss, logs = model(batch)
    return losses + [loss.item()], logs


# ---------------------------------------------------------------------------------------------
# jepa


def _spatial_sets(idx: torch.Tensor, grid) -> list[set[int]]:
    per = grid[1] * grid[2]
    return [{i % per for i in idx.tolist() if i // per == t} for t in range(grid[0])]


def test_multiblock_masks_are_tubes_disjoint_with_equal_counts():
    grid = (4, 8, 8)
    m = multiblock_masks(6, grid, 0.6, (0.1, 0.3), (0.5, 2.0), np.random.default_rng(0))
    n_mask = round(0.6 * 64)
    assert m.masked.shape == (6, 4 * n_mask) and m.keep.shape == (6, 4 * (64 - n_mask))  # equal counts
    seen = set()
    for b in range(6):
        masked, keep = set(m.masked[b].tolist()), set(m.keep[b].tolist())
        assert masked.isdisjoint(keep) and len(masked | keep) == 4 * 64
        assert m.masked[b].tolist() == sorted(masked) and m.keep[b].tolist() == sorted(keep)
        slices = _spatial_sets(m.masked[b], grid)
        assert all(s == slices[0] for s in slices)  # a tube: the same spatial set in every time slice
        seen.add(frozenset(slices[0]))
    assert len(seen) == 6  # each sample draws its own blocks
    # one block of exactly the target size: the target is a single square, not scattered tokens
    one = multiblock_masks(1, (2, 8, 8), 0.25, (0.25, 0.25), (1.0, 1.0), np.random.default_rng(3))
    rows, cols = zip(*(divmod(i, 8) for i in _spatial_sets(one.masked[0], (2, 8, 8))[0]))
    assert max(rows) - min(rows) == 3 and max(cols) - min(cols) == 3
    with pytest.raises(ValueError, match="target ratio"):
        multiblock_masks(1, grid, 0.999, (0.1, 0.3), (1.0, 1.0), np.random.default_rng(0))


def test_jepa_recipe_masks_per_sample_and_trains(tmp_path, store):
    _, model, recipe = _build(tmp_path, store, "pretrain.objective=jepa", "pretrain.jepa.target_ratio=0.5")
    assert isinstance(model, JEPA) and isinstance(recipe, JEPARecipe)
    batch = _batch(store, recipe)
    grid = model.encoder.shape.grid
    assert batch["masked"].shape == (4, grid[0] * 8) and batch["keep"].shape == (4, grid[0] * 8)
    for b in range(4):
        assert set(batch["masked"][b].tolist()).isdisjoint(batch["keep"][b].tolist())
    # a sample's mask depends on its own (seed, step, position) only, not on the rest of the batch
    ds = ClipDataset(store, "video", recipe, seed=0)
    pair = Collator(recipe, seed=0)([ds[Item(0, 0, 0)], ds[Item(0, 1, 1)]])
    alone = Collator(recipe, seed=0)([ds[Item(0, 1, 1)]])
    assert torch.equal(alone["masked"][0], pair["masked"][1]) and not torch.equal(pair["masked"][0], pair["masked"][1])
    losses, logs = _overfit(model, batch, steps=15)
    print("jepa losses", [round(x, 4) for x in losses])
    assert losses[-1] < 0.8 * losses[0]
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    with pytest.raises(ValueError, match="pretrain.jepa.target_ratio"):
        _build(tmp_path, store, "pretrain.objective=jepa", "pretrain.jepa.target_ratio=0.99")


def test_jepa_ema_follows_the_online_encoder_with_the_scheduled_momentum(tmp_path, store):
    _, model, recipe = _build(tmp_path, store, "pretrain.objective=jepa", "pretrain.jepa.ema_start=0.9",
                              "pretrain.jepa.ema_end=1.0")
    assert model.momentum_at(0, 5) == pytest.approx(0.9) and model.momentum_at(4, 5) == pytest.approx(1.0)
    assert model.momentum_at(2, 5) == pytest.approx(0.95)
    online0 = [p.detach().clone() for p in model.encoder.parameters()]
    for p0, t in zip(online0, model.target.parameters()):
        assert torch.equal(p0, t)  # the target starts as a copy
    batch = _batch(store, recipe, n=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(5):
        before = [t.detach().clone() for t in model.target.parameters()]
        loss, logs = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step(step, 5)
        m = model.momentum_at(step, 5)
        assert logs["ema_momentum"] == pytest.approx(model.momentum_at(step - 1, 5) if step else 0.9)
        for t0, t, p in zip(before, model.target.parameters(), model.encoder.parameters()):
            assert torch.allclose(t, m * t0 + (1 - m) * p, atol=1e-6)
        if step == 0:  # it moved towards the online encoder, and only a tenth of the way
            online = [p.detach() for p in model.encoder.parameters()]
            gap_before = sum(float((t0 - p).norm()) for t0, p in zip(before, online))
            gap_after = sum(float((t - p).norm()) for t, p in zip(model.target.parameters(), online))
            assert gap_after == pytest.approx(0.9 * gap_before, rel=1e-4)
    # at the end of the ramp (momentum 1) the target stays where it was
    assert all(torch.equal(t0, t) for t0, t in zip(before, model.target.parameters()))


# ---------------------------------------------------------------------------------------------
# pretext


def test_pretext_labels_match_the_transformations(store):
    recipe = PretextRecipe(8, [1, 2, 4], ["arrow", "speed", "shuffle"], shuffle_prob=0.3)
    assert recipe.frames_needed == 32  # the speed-4 window (29 frames) + 3 frames to start it at any phase
    video = max(store.videos_in("train"), key=lambda v: v.frames)
    seen = {"speed": set(), "backwards": set(), "shuffled": set()}
    offsets = {1: set(), 2: set(), 4: set()}
    for seed in range(120):
        ex = recipe.example(store, video, 0, np.random.default_rng(seed))
        t = recipe.draw(np.random.default_rng(seed))  # the same draws the example made
        speed = recipe.speeds[t.speed]
        assert int(ex["speed"]) == t.speed and int(ex["shuffle"]) == (t.order is not None)
        forward = store.window(video, t.offset, 8, speed)
        # the window at speed s is every s-th frame of the contiguous frames it spans
        assert np.array_equal(forward, store.window(video, t.offset, 7 * speed + 1)[::speed])
        if t.order is None:
            assert int(ex["arrow"]) == int(t.backwards)
            assert np.array_equal(ex["clip"], forward[::-1] if t.backwards else forward)
        else:
            assert int(ex["arrow"]) == IGNORE  # a shuffled clip has no arrow of time
            assert sorted(t.order) == list(range(8)) and list(t.order) not in (list(range(8)), list(range(7, -1, -1)))
            base = forward[::-1] if t.backwards else forward
            assert np.array_equal(ex["clip"], base[list(t.order)])
        assert 0 <= t.offset and t.offset + 7 * speed + 1 <= recipe.frames_needed
        seen["speed"].add(speed)
        seen["backwards"].add(t.backwards and t.order is None)
        seen["shuffled"].add(t.order is not None)
        offsets[speed].add(t.offset)
    assert seen["speed"] == {1, 2, 4} and seen["backwards"] == {True, False} and seen["shuffled"] == {True, False}
    # slow clips are not pinned to the start of the span (position in the video does not give the speed
    # away), and fast ones start at any phase of a 4-frame keyframe cycle
    assert len(offsets[1]) > 8 and offsets[4] == {0, 1, 2, 3}


def test_pretext_trains_its_heads_and_the_encoder(tmp_path, store):
    _, model, recipe = _build(tmp_path, store, "pretrain.objective=pretext")
    assert isinstance(model, Pretext) and set(model.heads) == {"arrow", "speed", "shuffle"}
    batch = _batch(store, recipe, n=8, step=1)
    assert batch["clip"].shape[1] == store.clip_frames
    # the fixed batch mixes every label: nothing is learnable from a constant
    assert set(batch["arrow"].tolist()) == {0, 1, IGNORE} and set(batch["speed"].tolist()) == {0, 1, 2}
    assert set(batch["shuffle"].tolist()) == {0, 1}
    losses, logs = _overfit(model, batch, steps=20)
    print("pretext losses", [round(x, 4) for x in losses], logs)
    assert losses[0] == pytest.approx(np.log(2) + np.log(3) + np.log(2), abs=0.1)  # starts at chance
    assert losses[-1] < 0.7 * losses[0]
    assert set(logs) == {"arrow_acc", "speed_acc", "shuffle_acc"} and all(0 <= v <= 1 for v in logs.values())
    # a batch where every clip is shuffled has no arrow labels: finite loss, heads still in the graph
    allshuf = {**batch, "arrow": torch.full_like(batch["arrow"], IGNORE)}
    loss, logs = model(allshuf)
    assert torch.isfinite(loss) and logs["arrow_acc"] == 0.0


# ---------------------------------------------------------------------------------------------
# contrastive


def test_augmentation_is_identical_across_the_frames_of_a_clip(store):
    video = store.videos_in("train")[0]
    frame = store.window(video, 5, 1)
    static = np.repeat(frame, 6, axis=0)
    clip = store.window(video, 0, 6)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(10):
        view = draw_view(store.size, store.size, (0.2, 0.6), rng)
        out = augment(static, view)
        assert out.shape == static.shape and out.dtype == np.uint8
        assert all(np.array_equal(out[i], out[0]) for i in range(6))  # one crop + flip for all frames
        changed += not np.array_equal(out[0], frame[0])
        moving = augment(clip, view)  # frame by frame, the same as augmenting each frame alone
        assert all(np.array_equal(moving[i], augment(clip[i:i + 1], view)[0]) for i in range(6))
    assert changed == 10
    s = store.size
    assert np.array_equal(augment(clip, View(0, 0, s, s, flip=True)), clip[:, :, ::-1])
    assert np.array_equal(augment(clip, View(0, 0, s, s, flip=False)), clip)
    # a crop is resized up without antialiasing, which only acts when shrinking: the same values
    for _ in range(20):
        view = draw_view(s, s, (0.2, 0.95), rng, flip=False)
        crop = torch.from_numpy(np.ascontiguousarray(clip[:, view.top:view.top + view.height,
                                                          view.left:view.left + view.width])).permute(0, 3, 1, 2)
        smooth = torch.nn.functional.interpolate(crop.float(), size=(s, s), mode="bilinear", align_corners=False,
                                                 antialias=True).round().clamp(0, 255).to(torch.uint8)
        assert np.array_equal(augment(clip, view), smooth.permute(0, 2, 3, 1).numpy())


def test_contrastive_recipe_cuts_two_clips_of_one_video_within_the_gap(tmp_path, store):
    _, model, recipe = _build(tmp_path, store, "pretrain.objective=contrastive", "pretrain.contrastive.max_gap=6",
                              "pretrain.contrastive.crop_scale=[1.0, 1.0]", "pretrain.contrastive.colour=0")
    assert recipe.frames_needed == store.clip_frames + 6
    video = store.videos_in("train")[0]
    t = store.clip_frames
    gaps = set()
    for seed in range(20):
        ex = recipe.example(store, video, 3, np.random.default_rng(seed))
        gap = int(ex["gap"])
        gaps.add(gap)
        assert 0 <= gap <= 6
        # crop_scale 1 with a square frame, no mirror (it would turn gravity), no colour change: the clip itself
        for key, start in (("view1", 3), ("view2", 3 + gap)):
            assert np.array_equal(ex[key], store.window(video, start, t))
    assert len(gaps) > 3
    _, _, mirrored = _build(tmp_path, store, "pretrain.objective=contrastive", "pretrain.contrastive.flip=true",
                            "pretrain.contrastive.crop_scale=[1.0, 1.0]", "pretrain.contrastive.colour=0")
    flips = set()
    for seed in range(20):
        ex = mirrored.example(store, video, 3, np.random.default_rng(seed))
        w = store.window(video, 3, t)
        flips.add(np.array_equal(ex["view1"], w[:, :, ::-1]))
        assert flips and (np.array_equal(ex["view1"], w) or np.array_equal(ex["view1"], w[:, :, ::-1]))
    assert flips == {True, False}
    # a start near the video's end: the gap shrinks so the second clip still fits
    for start, most in ((video.frames - t, 0), (video.frames - t - 2, 2)):
        for seed in range(5):
            ex = recipe.example(store, video, start, np.random.default_rng(seed))
            assert 0 <= int(ex["gap"]) <= most


def test_colour_views_permute_channels_and_scale_brightness(store):
    from videossl.objectives.contrastive import augment, draw_view

    clip = store.window(store.videos_in("train")[0], 0, store.clip_frames)
    seen = set()
    for seed in range(12):
        view = draw_view(clip.shape[1], clip.shape[2], (1.0, 1.0), np.random.default_rng(seed), flip=False, colour=0.3)
        assert sorted(view.channels) == [0, 1, 2] and 0.7 <= view.gain <= 1.3 and not view.flip
        expected = np.clip(np.rint(clip[..., list(view.channels)].astype(np.float32) * view.gain), 0, 255)
        assert np.abs(augment(clip, view).astype(np.float32) - expected).max() <= 1  # rounding only
        seen.add(view.channels)
    assert len(seen) > 2  # colour is not what two clips of a video share


@pytest.mark.parametrize("objective", ["contrastive", "{pretext: 1.0, contrastive: 1.0}"])
def test_background_swap_trades_what_does_not_move_between_clips_of_a_batch(tmp_path, store, objective):
    """background: swap: every clip of a pair gets another clip's static part in place of its own (a
    different partner for each clip of the pair), so a pair no longer shares its video's background; what
    moves is kept; the clips themselves are the ones `keep` cuts."""
    common = (f"pretrain.objective={objective}", "pretrain.contrastive.crop_scale=[1.0, 1.0]", "pretrain.contrastive.colour=0")
    _, model, swap = _build(tmp_path, store, *common, "pretrain.contrastive.background=swap")
    keep = _build(tmp_path, store, *common)[2]
    videos = store.videos_in("train")[:5]
    examples = [swap.example(store, v, 0, np.random.default_rng(i)) for i, v in enumerate(videos)]
    kept = [keep.example(store, v, 0, np.random.default_rng(i)) for i, v in enumerate(videos)]
    clips = {k: [e[k] for e in examples] for k in PAIR}
    statics = {k: [e[k + STATIC].astype(np.float32) for e in examples] for k in PAIR}
    for i, (e, k) in enumerate(zip(examples, kept)):
        assert sorted(e) == sorted([*k, *(key + STATIC for key in PAIR)])
        for key in PAIR:
            assert np.array_equal(e[key], k[key])  # the same draws as keep: only the static part is added
            # the static part is the video's own background: most of its frames' pixels, not another video's
            own, other = ((np.abs(clips[key][i].astype(np.float32) - statics[key][j]) <= 8).mean() for j in (i, i - 1))
            assert own > 0.75 and other < own - 0.2, (own, other)

    def moved(key, i, j):
        return np.clip(np.rint(clips[key][i].astype(np.float32) - statics[key][i] + statics[key][j]), 0, 255)

    rngs = [np.random.default_rng(100 + i) for i in range(len(videos))]
    again = [{k: v.copy() for k, v in e.items()} for e in examples]
    batch = swap.collate(examples, rngs)
    assert sorted(batch) == sorted(keep.collate(kept, rngs))  # the static parts do not reach the model
    for i in range(len(videos)):
        partners = [[j for j in range(len(videos)) if np.array_equal(batch[key][i].numpy(), moved(key, i, j))]
                    for key in PAIR]
        assert all(len(p) == 1 and p[0] != i for p in partners), partners
        assert partners[0] != partners[1]
    # the partners are drawn from each example's own generator: the same batch again, the same clips
    replay = swap.collate(again, [np.random.default_rng(100 + i) for i in range(len(videos))])
    assert all(torch.equal(batch[k], replay[k]) for k in batch)
    losses, _ = _overfit(model, _batch(store, swap, n=4), steps=15)
    assert losses[-1] < 0.8 * losses[0]


def test_info_nce_prefers_matching_views():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    noise = torch.nn.functional.normalize(z + 0.1 * torch.randn(8, 16, generator=g), dim=-1)
    matched, acc = info_nce(z, noise, 0.1)
    shuffled, acc_shuffled = info_nce(z, noise[torch.roll(torch.arange(8), 1)], 0.1)
    random, _ = info_nce(z, torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1), 0.1)
    assert matched < 0.5 * random and matched < 0.5 * shuffled and acc == 1.0 and acc_shuffled == 0.0
    # symmetric: swapping the views gives the same loss
    assert torch.isclose(info_nce(noise, z, 0.1)[0], matched)


@pytest.mark.parametrize("variant", ["video", "frames"])
def test_contrastive_trains_and_pairs_clips_of_the_same_video(tmp_path, store, variant):
    _, model, recipe = _build(tmp_path, store, "pretrain.objective=contrastive", "pretrain.baseline_objective=contrastive",
                              "pretrain.contrastive.max_gap=4", variant=variant)
    assert isinstance(model, Contrastive)
    batch = _batch(store, recipe, variant, n=6)
    frames = store.clip_frames if variant == "video" else 1
    assert batch["view1"].shape == batch["view2"].shape == (6, frames, store.size, store.size, 3)
    losses, logs = _overfit(model, batch, steps=30)
    print(f"contrastive[{variant}] losses", [round(x, 4) for x in losses], logs)
    assert losses[-1] < 0.6 * losses[0]
    # the positives are the two clips of one example's video: mismatched pairs cost more
    with torch.no_grad():
        wrong = {**batch, "view2": batch["view2"].roll(1, dims=0)}
        assert model(wrong)[0] > losses[-1] + 1.0


# ---------------------------------------------------------------------------------------------
# causal attention, combinations, the frames variant, config


def test_causal_time_attention_ignores_later_frames_and_joint_does_not():
    torch.manual_seed(0)
    shape = VitShape(frames=4, img_size=16, patch=4, tubelet=2, dim=24, depth=2, heads=2)
    causal = VideoViT(VitShape(**{**shape.as_dict(), "causal_time": True})).eval()
    joint = VideoViT(shape).eval()
    joint.load_state_dict(causal.state_dict())  # same weights: only the attention mask differs
    x = torch.randn(1, 3, 4, 16, 16)
    later = x.clone()
    later[:, :, 2:] = torch.randn(1, 3, 2, 16, 16)  # change time slice 1 (frames 2, 3) only
    earlier = x.clone()
    earlier[:, :, :2] = torch.randn(1, 3, 2, 16, 16)
    per = 16  # tokens per time slice
    keep = torch.tensor([[0, 3, 7, 16, 20, 30]])
    with torch.no_grad():
        assert torch.allclose(causal(later)[:, :per], causal(x)[:, :per], atol=1e-6)
        assert not torch.allclose(causal(later)[:, per:], causal(x)[:, per:], atol=1e-3)
        assert not torch.allclose(causal(earlier)[:, per:], causal(x)[:, per:], atol=1e-3)  # the past is seen
        assert not torch.allclose(joint(later)[:, :per], joint(x)[:, :per], atol=1e-3)
        # with kept tokens the mask follows their time indices
        assert torch.allclose(causal(later, keep=keep)[:, :3], causal(x, keep=keep)[:, :3], atol=1e-6)
        assert not torch.allclose(joint(later, keep=keep)[:, :3], joint(x, keep=keep)[:, :3], atol=1e-3)
    # a shape stored without the field (older checkpoints) is joint attention
    old = {k: v for k, v in shape.as_dict().items() if k != "causal_time"}
    assert VitShape(**old).causal_time is False


@pytest.mark.parametrize("written", ["{contrastive: 1.0, pretext: 1.0}", "{pretext: 0.5, mae: 1.0}"])
def test_the_order_parts_are_written_in_does_not_change_the_model(tmp_path, store, written):
    """A mapping's key order is not part of the objective: the KFP pipeline sorts params' keys, so
    {pretext, contrastive} written either way must give bit-identical weights and the same loss."""
    import yaml

    parts = yaml.safe_load(written)
    reversed_ = "{" + ", ".join(f"{k}: {v}" for k, v in reversed(parts.items())) + "}"
    built = [_build(tmp_path / str(i), store, f"pretrain.objective={w}") for i, w in enumerate((written, reversed_))]
    (_, a, recipe_a), (_, b, recipe_b) = built
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    torch.manual_seed(1)
    loss_a = a(_batch(store, recipe_a))[0]
    torch.manual_seed(1)
    assert torch.equal(loss_a, b(_batch(store, recipe_b))[0])


def test_combined_mae_and_pretext_trains(tmp_path, store):
    _, model, recipe = _build(tmp_path, store, "pretrain.objective={mae: 1.0, pretext: 0.5}")
    assert isinstance(model, Combined) and set(model.parts) == {"mae", "pretext"}
    assert recipe.frames_needed == store.clip_frames * 4
    batch = _batch(store, recipe, n=4)
    assert {"mae/clip", "mae/keep", "pretext/clip", "pretext/speed"} <= set(batch)
    losses, logs = _overfit(model, batch, steps=15)
    print("mae+pretext losses", [round(x, 4) for x in losses], logs)
    assert losses[-1] < 0.7 * losses[0]
    assert {"loss_mae", "loss_pretext", "pretext_speed_acc"} <= set(logs)
    assert logs["loss_mae"] + 0.5 * logs["loss_pretext"] == pytest.approx(losses[-1], rel=1e-4)


def test_pretext_on_contrastive_views_labels_both_clips_and_trains_in_one_pass(tmp_path, store):
    """pretext_views: the contrastive pair carries one pretext transformation (both clips), the heads
    read both clips, and the encoder runs once per clip: the weighted pair's loss from one pass."""
    _, model, recipe = _build(tmp_path, store, "pretrain.objective={pretext: 1.0, contrastive: 0.5}",
                              "pretrain.contrastive.pretext_views=true", "pretrain.contrastive.crop_scale=[1.0, 1.0]",
                              "pretrain.contrastive.colour=0")
    assert isinstance(model, PretextContrastive) and model.weights == {"pretext": 1.0, "contrastive": 0.5}
    assert recipe.frames_needed == store.clip_frames * 4  # the pretext span; the gap fits inside it
    video = store.videos_in("train")[0]
    pretext = recipe.pretext
    for seed in range(12):
        ex = recipe.example(store, video, 0, np.random.default_rng(seed))
        t = pretext.draw(np.random.default_rng(seed))  # the example's first draw is its transformation
        assert {k: int(ex[k]) for k in pretext.tasks} == pretext.labels(t)
        for key, start in (("view1", 0), ("view2", int(ex["gap"]))):  # crop 1.0, no colour: the clip itself
            assert np.array_equal(ex[key], pretext.apply(store, video, start, t))
    batch = _batch(store, recipe, n=4)
    passes = []
    hook = model.encoder.register_forward_hook(lambda m, args, out: passes.append(out.shape[0]))
    losses, logs = _overfit(model, batch, steps=15)
    hook.remove()
    assert set(passes) == {8}  # 4 pairs: 8 clips, each encoded once per step
    print("pretext-on-views losses", [round(x, 4) for x in losses], logs)
    assert losses[-1] < 0.7 * losses[0]
    assert {"loss_pretext", "loss_contrastive", "pretext_arrow_acc", "contrastive_acc"} <= set(logs)
    assert logs["loss_pretext"] + 0.5 * logs["loss_contrastive"] == pytest.approx(losses[-1], rel=1e-4)


def test_frames_variant_trains_the_baseline_objective(tmp_path, store):
    _, model, _ = _build(tmp_path, store, "pretrain.objective=jepa", variant="frames")
    assert isinstance(model, MAE) and model.encoder.shape.frames == 1
    _, model, _ = _build(tmp_path, store, "pretrain.objective=pretext", "pretrain.baseline_objective=contrastive",
                         variant="frames")
    assert isinstance(model, Contrastive)
    _, model, _ = _build(tmp_path, store, "pretrain.objective=jepa", "model.causal_time=true")
    assert isinstance(model, JEPA) and model.encoder.shape.causal_time and model.target.shape.causal_time


@pytest.mark.parametrize("override, key", [
    ("pretrain.objective=byol", "pretrain.objective"),
    ("pretrain.jepa.ema_start=1.5", "pretrain.jepa.ema_start"),
    ("pretrain.jepa.ema_end=0.99", "pretrain.jepa.ema_start"),  # start 0.996 > end
    ("pretrain.jepa.block_scale=[0.5, 0.2]", "pretrain.jepa.block_scale"),
    ("pretrain.jepa.predictor_heads=5", "pretrain.jepa.predictor_dim"),
    ("pretrain.pretext.speeds=[2, 2]", "pretrain.pretext.speeds"),
    ("pretrain.pretext.tasks=[arrow, colour]", "pretrain.pretext.tasks[1]"),
    ("pretrain.contrastive.temperature=0", "pretrain.contrastive.temperature"),
    ("pretrain.contrastive.crop_scale=[0.0, 1.0]", "pretrain.contrastive.crop_scale"),
    ("pretrain.baseline_objective=jepa", "pretrain.baseline_objective"),
])
def test_objective_params_are_validated_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError) as err:
        tiny_config(tmp_path, override)
    assert f"'{key}" in str(err.value)
    for name in ("mae", "jepa", "pretext", "contrastive"):
        assert tiny_config(tmp_path, f"pretrain.objective={name}").pretrain.objective == name
    with pytest.raises(ConfigError, match="'pretrain.batch_size'"):
        tiny_config(tmp_path, "pretrain.objective=contrastive", "pretrain.batch_size=2", "pretrain.nproc=2")
    with pytest.raises(ConfigError, match="'pretrain.micro_batch'.*contrastive"):
        tiny_config(tmp_path, "pretrain.baseline_objective=contrastive", "pretrain.micro_batch=1")


def test_pretext_speeds_longer_than_the_videos_fail_with_a_clear_error(tmp_path, store):
    _, _, recipe = _build(tmp_path, store, "pretrain.objective=pretext", "pretrain.pretext.speeds=[1, 8]")
    with pytest.raises(ValueError, match=f"the {recipe.frames_needed} frames one example needs"):
        ClipDataset(store, "video", recipe, seed=0)
