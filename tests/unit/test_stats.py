"""Intervals that resample videos, paired gaps, and label-permutation nulls (eval/stats.py)."""
from __future__ import annotations

import numpy as np
import pytest

from videossl.config import AttentiveProbeConfig, KnnProbeConfig
from videossl.eval import attentive, probes
from videossl.eval.stats import Null, VideoBootstrap, null_scores, percentile_interval, permuted_by_video


def _clustered(n_videos: int, clips: int, p: float, spread: float, rng: np.random.Generator):
    """Per-clip 0/1 outcomes whose success rate varies by video around p (clips of a video agree)."""
    rates = np.clip(rng.normal(p, spread, n_videos), 0, 1)
    videos = [f"v{i}" for i in range(n_videos) for _ in range(clips)]
    correct = (rng.random(n_videos * clips) < np.repeat(rates, clips)).astype(float)
    return correct, videos


def test_estimate_is_the_mean_and_the_interval_brackets_it():
    rng = np.random.default_rng(0)
    correct, videos = _clustered(60, 6, 0.7, 0.15, rng)
    est = VideoBootstrap(videos, 1000, seed=1).estimate(correct, videos)
    assert est.value == pytest.approx(correct.mean())
    assert est.ci_low < est.value < est.ci_high
    assert est.keys("video") == {"video": round(est.value, 4), "video_ci_low": round(est.ci_low, 4),
                                 "video_ci_high": round(est.ci_high, 4)}


def test_clustered_clips_give_wider_intervals_than_a_binomial_would():
    rng = np.random.default_rng(1)
    correct, videos = _clustered(40, 8, 0.6, 0.25, rng)
    est = VideoBootstrap(videos, 2000, seed=2).estimate(correct, videos)
    lo, hi = probes.wilson_interval(correct.sum(), len(correct))  # treats the 320 clips as independent
    assert est.ci_high - est.ci_low > 1.25 * (hi - lo)  # design effect sqrt(1 + 7 * 0.26) ~ 1.7 expected


def test_video_bootstrap_covers_the_true_rate():
    """Over many simulated test sets the 95% interval holds the true success rate about 95% of the time."""
    rng = np.random.default_rng(3)
    hits = 0
    trials = 300
    for t in range(trials):
        correct, videos = _clustered(60, 5, 0.7, 0.2, rng)
        est = VideoBootstrap(videos, 400, seed=t).estimate(correct, videos)
        hits += est.ci_low <= 0.7 <= est.ci_high
    assert 0.88 <= hits / trials <= 0.99


def test_paired_gap_cancels_what_two_models_share():
    rng = np.random.default_rng(4)
    a, videos = _clustered(50, 6, 0.7, 0.3, rng)
    b = a.copy()
    flip = rng.random(len(b)) < 0.05
    b[flip] = 1 - b[flip]
    boot = VideoBootstrap(videos, 1000, seed=5)
    gap = boot.gap(a, b, videos)
    ea, eb = boot.estimate(a, videos), boot.estimate(b, videos)
    assert gap.value == pytest.approx(a.mean() - b.mean())
    # both models are noisy, but their difference is not: the paired interval is much narrower
    assert gap.ci_high - gap.ci_low < 0.5 * min(ea.ci_high - ea.ci_low, eb.ci_high - eb.ci_low)
    same = boot.gap(a, a, videos)
    assert (same.value, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)


def test_the_same_draws_serve_every_task_and_a_subset_of_videos():
    videos = [f"v{i}" for i in range(10)]
    boot = VideoBootstrap(videos, 50, seed=0)
    assert boot.counts.shape == (50, 10) and np.all(boot.counts.sum(1) == 10)
    # a task that uses only some videos is scored on the drawn copies of those
    sub = ["v1", "v1", "v3"]
    reps = boot.replicates(np.array([1.0, 0.0, 1.0]), sub)
    has = (boot.counts[:, 1] + boot.counts[:, 3]) > 0
    expected = (boot.counts[has, 1] + boot.counts[has, 3]) / (2 * boot.counts[has, 1] + boot.counts[has, 3])
    np.testing.assert_allclose(reps[has], expected)
    assert percentile_interval(np.array([np.nan, np.nan])) != percentile_interval(reps)  # all-NaN: (nan, nan)


def null_accuracies(train_x, train_y, train_videos, test_x, test_y, classes, permutations, seed):
    s = null_scores(train_x, train_y, train_videos, test_x, classes, permutations, seed)
    return (s.argmax(2) == np.asarray(test_y)[:, None]).mean(0)


def test_null_of_balanced_labels_is_chance_with_a_spread():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(400, 20))
    y = np.tile(np.arange(4), 100)
    videos = [f"v{i // 4}" for i in range(200)]  # 4 clips a video, one of each class
    acc = null_accuracies(x[:200], y[:200], videos, x[200:], y[200:], classes=4, permutations=300, seed=7)
    null = Null.of(acc)
    assert null.mean == pytest.approx(0.25, abs=0.01)
    assert null.min <= null.low < null.mean < null.high <= null.max
    assert null.high - null.low > 0.05


def test_every_probe_on_shuffled_labels_lands_inside_the_null_range():
    """Features with real structure (clips of a video look alike, and the label is readable from them),
    but training labels shuffled: whatever the probe, its test score is one the null produces."""
    rng = np.random.default_rng(8)
    n_videos, clips, dim = 500, 4, 16
    labels = np.repeat(np.arange(n_videos) % 3, clips)
    centres = rng.normal(size=(n_videos, dim))
    centres[:, 0] += 4 * (np.arange(n_videos) % 3)  # the label is linearly readable (with true labels)
    x = np.repeat(centres, clips, axis=0) + 0.3 * rng.normal(size=(n_videos * clips, dim))
    train, val, test = (np.arange(n_videos * clips) // clips % 5 < 3), (np.arange(n_videos * clips) // clips % 5 == 3), \
        (np.arange(n_videos * clips) // clips % 5 == 4)
    shuffled = labels.copy()
    shuffled[train | val] = rng.permutation(labels[train | val])
    videos = np.repeat(np.arange(n_videos), clips)[train | val].tolist()
    null = Null.of(null_accuracies(x[train | val], shuffled[train | val], videos, x[test], labels[test], 3, 400, seed=9))
    tokens = x.reshape(len(x), 4, dim // 4)
    split = lambda mask, feats: (feats[mask], shuffled[mask] if not (mask is test) else labels[mask])  # noqa: E731
    scores = {
        "linear": probes.linear_probe(split(train, x), split(val, x), split(test, x), 3, [0.01, 1.0, 100.0], 50),
        "attentive": attentive.attentive_probe(split(train, tokens), split(val, tokens), split(test, tokens), 3,
                                            AttentiveProbeConfig(epochs=5), seed=0),
        "knn": probes.knn_probe(split(train, x), split(val, x), split(test, x), 3, KnnProbeConfig(ks=[5, 10])),
    }
    for name, s in scores.items():
        assert null.min <= s.accuracy <= null.max, (name, s.accuracy, null)
    # and with the true labels the same features are far outside it: the null is not just wide
    true = probes.linear_probe((x[train], labels[train]), (x[val], labels[val]), (x[test], labels[test]), 3,
                               [0.01, 1.0], 50)
    assert true.accuracy > null.max + 0.2


def test_the_null_permutes_labels_by_video_not_by_clip():
    """Each permutation relabels a video as a whole: clips that shared a label still share one, and a
    video whose clips hold every class keeps holding every class."""
    rng = np.random.default_rng(3)
    same = permuted_by_video(np.repeat([0, 1, 2], 20), [f"v{i // 5}" for i in range(60)], 3, 50, rng)
    assert same.shape == (60, 50)
    per_video = same.T.reshape(50, 12, 5)
    assert (per_video == per_video[..., :1]).all()          # a video's clips keep one label
    assert len({tuple(p) for p in same.T}) > 10              # and the permutations differ
    mixed = permuted_by_video(np.tile([0, 1], 30), [f"v{i // 2}" for i in range(60)], 2, 50, rng)
    pairs = mixed.T.reshape(50, 30, 2)
    assert (np.sort(pairs, axis=2) == [0, 1]).all()          # a forward/reversed pair stays one of each
    assert 0.3 < (pairs[..., 0] == 1).mean() < 0.7            # flipped for about half the videos
