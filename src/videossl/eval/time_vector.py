"""The time vector: the one direction in feature space that separates forward from reversed clips.

Fit on training clips only, with no parameter to choose:
  z(x) = standardised features (per-dimension mean and std of all training clips, both directions),
  mu_f, mu_r = mean z of training forward / reversed clips,
  v = mu_f - mu_r (the time vector), v_hat = v / ||v||,
  p(x) = (z(x) - (mu_f + mu_r) / 2) . v_hat (the projection, in standardised units).
The threshold is the midpoint of the training class means' projections (+-||v|| / 2), which this
centring puts at 0: a test clip is called forward when p > 0. A projection of exactly 0 earns half
a point, so a model with no time vector at all (a bag of frames: forward and reversed clips have
the same features, v = 0) scores exactly one half whatever the class balance.

Unlike a trained probe this measures whether the arrow of time is one direction of the features,
shared by all training videos. `paired=True` (test_fwd[i] and test_rev[i] are the same clip both
ways) adds the pair score: how often the forward clip projects above its own reversal, which
ignores each video's offset along v.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from videossl.eval.probes import flatten_clips, standardiser, wilson_interval

# ||v|| below this times sqrt(D) is float rounding, not a direction: forward and reversed means
# summed in a different frame order differ by ~1e-7 per dimension even for a bag of frames.
TIME_VECTOR_MIN_NORM = 1e-5


@dataclass(frozen=True)
class TimeVectorScore:
    """Test score of the time vector. `accuracy` over all test clips (n = forward + reversed) with
    its 95% Wilson interval; `pair_*` only with paired=True (else None / 0); `projections_*` are p
    for every test clip (for the histogram); `norm` is ||v|| (0.0: no direction); `separation` is
    d' on test, (mean p_fwd - mean p_rev) / pooled std (0.0 when undefined)."""
    accuracy: float
    n: int
    ci_low: float
    ci_high: float
    projections_fwd: np.ndarray
    projections_rev: np.ndarray
    norm: float
    separation: float
    pair_accuracy: float | None = None
    pair_n: int = 0
    pair_ci_low: float | None = None
    pair_ci_high: float | None = None


def time_vector(train_fwd: np.ndarray, train_rev: np.ndarray, test_fwd: np.ndarray, test_rev: np.ndarray,
                *, paired: bool = False) -> TimeVectorScore:
    """Fit the time vector on training forward/reversed features [N, ...] and score it on test clips
    (see the module docstring). Trailing dimensions are flattened per clip."""
    train_fwd, train_rev, test_fwd, test_rev = map(flatten_clips, (train_fwd, train_rev, test_fwd, test_rev))
    norm = standardiser(np.concatenate([train_fwd, train_rev]))
    mu_f, mu_r = norm(train_fwd).astype(np.float64).mean(0), norm(train_rev).astype(np.float64).mean(0)
    v = mu_f - mu_r
    length = float(np.linalg.norm(v))
    if length <= TIME_VECTOR_MIN_NORM * math.sqrt(len(v)):
        length, direction = 0.0, np.zeros_like(v)
    else:
        direction = v / length
    centre = (mu_f + mu_r) / 2
    project = lambda a: (norm(a).astype(np.float64) - centre) @ direction  # noqa: E731
    p_f, p_r = project(test_fwd), project(test_rev)

    n = len(p_f) + len(p_r)
    correct = (p_f > 0).sum() + (p_r < 0).sum() + 0.5 * ((p_f == 0).sum() + (p_r == 0).sum())
    lo, hi = wilson_interval(float(correct), n)
    pooled = math.sqrt((p_f.var() + p_r.var()) / 2) if len(p_f) and len(p_r) else 0.0
    separation = float((p_f.mean() - p_r.mean()) / pooled) if pooled > 0 else 0.0
    pair = {}
    if paired:
        if len(p_f) != len(p_r):
            raise ValueError(f"paired=True needs as many reversed clips as forward ones ({len(p_r)} vs {len(p_f)})")
        pair_correct = float((p_f > p_r).sum() + 0.5 * (p_f == p_r).sum())
        plo, phi = wilson_interval(pair_correct, len(p_f))
        pair = {"pair_accuracy": pair_correct / max(1, len(p_f)), "pair_n": len(p_f),
                "pair_ci_low": plo, "pair_ci_high": phi}
    return TimeVectorScore(float(correct) / max(1, n), n, lo, hi, p_f, p_r, length, separation, **pair)
