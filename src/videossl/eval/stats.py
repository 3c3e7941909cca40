"""Honest uncertainty for the benchmark: intervals by resampling videos, paired gaps, label-permutation nulls.

Clips of one video are not independent samples (they share objects, gravity and background), so
every interval here resamples *test videos* with replacement (a cluster bootstrap) and recomputes
the score from all clips of the drawn videos. One `VideoBootstrap` holds the draws for every task and
model of a run: a gap between two models, or the headline score built from several tasks, is computed
on the same draws (paired), so shared video-to-video noise cancels instead of adding up.

The null of a task is the test accuracy a probe reaches when the training labels carry no signal:
the labels of the training items are permuted, a probe is fit, and test accuracy is recorded, many
times. Its mean is the task's chance level (label priors and all), and its spread is how far from
chance a model with nothing to say can land on these test videos.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from videossl.eval.scores import with_interval

CI_LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float

    def keys(self, prefix: str, decimals: int = 4) -> dict[str, float]:
        """{prefix: value, prefix_ci_low: .., prefix_ci_high: ..}: the scores.json form."""
        return with_interval(prefix, self.value, self.ci_low, self.ci_high, decimals)


def percentile_interval(replicates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


class VideoBootstrap:
    """`replicates` resamples (with replacement) of the given test videos, drawn once from `seed`.

    Scores are means over items (clips); an item counts through its video: a replicate's score is
    sum over drawn videos of the correct items / sum over drawn videos of the items."""

    def __init__(self, videos: Sequence[str], replicates: int, seed: int):
        self.videos = sorted(set(videos))
        self.index = {v: i for i, v in enumerate(self.videos)}
        rng = np.random.default_rng([seed, 7])
        n = len(self.videos)
        draws = rng.integers(0, n, size=(replicates, n)) if n else np.zeros((replicates, 0), dtype=np.int64)
        # counts[b, v]: how often video v is drawn in replicate b
        self.counts = np.zeros((replicates, n), dtype=np.float64)
        np.add.at(self.counts, (np.arange(replicates)[:, None], draws), 1.0)

    def _per_video(self, values: np.ndarray, item_videos: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.array([self.index[v] for v in item_videos], dtype=np.int64)
        sums = np.bincount(idx, weights=np.asarray(values, dtype=np.float64), minlength=len(self.videos))
        return sums, np.bincount(idx, minlength=len(self.videos)).astype(np.float64)

    def replicates(self, values: np.ndarray, item_videos: Sequence[str]) -> np.ndarray:
        """[replicates] mean of `values` (one per item) over each resample's items."""
        sums, counts = self._per_video(values, item_videos)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.counts @ sums) / (self.counts @ counts)

    def estimate(self, values: np.ndarray, item_videos: Sequence[str]) -> Estimate:
        values = np.asarray(values, dtype=np.float64)
        point = float(values.mean()) if len(values) else float("nan")
        return Estimate(point, *percentile_interval(self.replicates(values, item_videos)))

    def gap(self, a: np.ndarray, b: np.ndarray, item_videos: Sequence[str]) -> Estimate:
        """Paired difference of two models' item scores on the same items: mean(a) - mean(b)."""
        return self.estimate(np.asarray(a, np.float64) - np.asarray(b, np.float64), item_videos)


def permuted_by_video(labels: np.ndarray, videos: Sequence[str], classes: int, permutations: int,
                      rng: np.random.Generator) -> np.ndarray:
    """[N, permutations] labels, each permutation relabelling every video through its own random
    permutation of the classes."""
    _, video_of = np.unique(np.asarray(videos), return_inverse=True)
    maps = np.stack([rng.permuted(np.tile(np.arange(classes), (video_of.max() + 1, 1)), axis=1)
                     for _ in range(permutations)], axis=0)  # [P, videos, classes]: each video's relabelling
    return np.ascontiguousarray(maps[:, video_of, np.asarray(labels, np.int64)].T)


def null_scores(train_x: np.ndarray, train_y: np.ndarray, train_videos: Sequence[str], test_x: np.ndarray,
                classes: int, permutations: int, seed: int, ridge: float = 1.0) -> np.ndarray:
    """[N_test, permutations, classes] test scores of a probe fit on training labels permuted BY VIDEO.

    Each permutation relabels every training video through its own random permutation of the classes,
    so the labels carry nothing while each video's items keep their structure (a video's clips share
    one label, or a set's members keep being split into two groups): clips of one video are not
    independent, and permuting them one by one would make a null narrower than the truth.
    The probe is a ridge-regression classifier on one-hot labels (closed form, standardised features,
    penalty `ridge` x N), so all permutations cost one decomposition: W = (X^T X + lam I)^-1 X^T Y_perm.
    It stands in for any probe: with labels that carry nothing, what spreads the score is how the test
    items cluster by video, not which probe made the predictions."""
    rng = np.random.default_rng([seed, 11])
    x = torch.as_tensor(np.asarray(train_x, np.float64).reshape(len(train_x), -1))
    xt = torch.as_tensor(np.asarray(test_x, np.float64).reshape(len(test_x), -1))
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mean) / std, (xt - mean) / std
    y = np.asarray(train_y, np.int64)
    perms = permuted_by_video(y, train_videos, classes, permutations, rng)
    onehot = torch.zeros(len(y), permutations, classes, dtype=torch.float64)
    onehot.scatter_(2, torch.from_numpy(np.ascontiguousarray(perms))[..., None], 1.0)
    onehot = onehot - onehot.mean(0, keepdim=True)
    n, d = x.shape
    lam = ridge * n
    if n <= d:  # dual form: W x_test = x_test X^T (X X^T + lam I)^-1 Y
        kernel = torch.linalg.solve(x @ x.T + lam * torch.eye(n, dtype=x.dtype), onehot.reshape(n, -1))
        scores = (xt @ x.T) @ kernel
    else:
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(d, dtype=x.dtype), x.T @ onehot.reshape(n, -1))
        scores = xt @ w
    return scores.reshape(len(xt), permutations, classes).numpy()


@dataclass(frozen=True)
class Null:
    mean: float
    low: float   # 2.5th percentile
    high: float  # 97.5th percentile
    min: float
    max: float

    @classmethod
    def of(cls, accuracies: np.ndarray) -> "Null":
        lo, hi = percentile_interval(accuracies)
        return cls(float(np.mean(accuracies)), lo, hi, float(np.min(accuracies)), float(np.max(accuracies)))
