"""Future-clip retrieval: given the clip at time t, find the clip that follows it (t + delta).

Each split is a set of pairs (present [N, ...], future [N, ...]): row i of `future` is the clip that
follows row i of `present` in the same video. On test, the gallery is every test pair's future clip
and query i's one correct item is gallery i; a query ranks the whole gallery by cosine similarity.

Two scorers, both on features standardised with training statistics:
- `cosine`: the present clip's own features as the query. It measures how similar a clip is to
  its own future, which a bag of frames gets largely from appearance (same video, same scene).
- `predictor`: a ridge regression from present to future features, fit in closed form on train
  pairs (its strength chosen on validation pairs by predictor R@1), applied to the test query.
  A model whose features carry dynamics can be extrapolated; one that carries only appearance
  cannot do better than `cosine`.

Appearance alone must not solve it. The caller builds several pairs per test video (different
start times), so every query's gallery holds the futures of its own video's other clips: the
same scene at other times, which only the timing can tell apart (and, when windows overlap, the
query's own present clip as another pair's future: a perfect appearance match that is wrong). `groups` (the source video of
each test pair) adds the within-video score: the rank of the correct future among its own video's
futures only, whose chance level (mean 1 / clips per video) is reported beside it. Ties in
similarity count against the query (pessimistic ranks): a model whose features cannot tell two
gallery clips apart must not be credited with picking the right one.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
import torch

from videossl.eval.probes import STD_EPS, flatten_clips, single_thread, standardiser, wilson_interval
from videossl.eval.scores import CI_HIGH, CI_LOW

RETRIEVAL_KS = (1, 5)                         # R@k reported for every scorer
RIDGE_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)    # ridge strength in units of N_train (features are standardised)

Pairs = tuple[np.ndarray, np.ndarray]  # (present features [N, ...], future features [N, ...]), row-aligned


def _unit(a: torch.Tensor) -> torch.Tensor:
    return a / a.norm(dim=1, keepdim=True).clamp_min(STD_EPS)


def ranks(queries: np.ndarray, gallery: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of gallery item i for query i under cosine similarity, ties counted against
    (rank = number of other items at least as similar). With `groups`, only items of query i's
    own group compete. float64, so near-ties are not decided by float32 rounding."""
    with single_thread():
        q, g = (_unit(torch.as_tensor(np.asarray(a), dtype=torch.float64)) for a in (queries, gallery))
        sims = q @ g.T
        beats = sims >= sims.diagonal().unsqueeze(1)
        beats.fill_diagonal_(False)
        if groups is not None:
            same = np.asarray(groups)
            beats &= torch.from_numpy(same[:, None] == same[None, :])
        return beats.sum(1).numpy()


class RidgePath:
    """Closed-form ridge regressions y ~ x W + b for a whole grid of strengths from one
    eigendecomposition (float64): penalty alpha * N_train * ||W||^2, so alpha is scale-free on
    standardised features. W is never formed; predictions are computed query side, which for wide
    features (D in the thousands) avoids a D x D product per alpha.

    With centred X = U S V^T: W = X^T U diag(1 / (s^2 + lam)) U^T Y when N <= D (the N x N Gram
    matrix is decomposed), or V diag(1 / (s^2 + lam)) V^T X^T Y when N > D (the D x D one)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        with single_thread():
            xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
            self.n, self.x_mean, self.y_mean = len(xt), xt.mean(0), yt.mean(0)
            xc, yc = xt - self.x_mean, yt - self.y_mean
            self.dual = xc.shape[0] <= xc.shape[1]
            eig, vecs = torch.linalg.eigh(xc @ xc.T if self.dual else xc.T @ xc)
            self.eig = eig.clamp_min(0.0)  # a Gram matrix is PSD; clamp rounding below zero
            self.xc, self.vecs = xc, vecs
            self.right = vecs.T @ (yc if self.dual else xc.T @ yc)  # [r, D_out]

    def predict(self, queries: np.ndarray, alphas: Sequence[float]) -> list[np.ndarray]:
        """Predicted future features of `queries`, one array per alpha."""
        with single_thread():
            q = torch.as_tensor(queries, dtype=torch.float64) - self.x_mean
            left = (q @ self.xc.T) @ self.vecs if self.dual else q @ self.vecs  # [n_queries, r]
            return [((left / (self.eig + alpha * self.n)) @ self.right + self.y_mean).numpy() for alpha in alphas]


def _recall(r: np.ndarray, k: int) -> dict[str, float]:
    correct = int((r < k).sum())
    lo, hi = wilson_interval(correct, len(r))
    return {"": correct / max(1, len(r)), CI_LOW: lo, CI_HIGH: hi}


def retrieval_scores(train: Pairs, val: Pairs, test: Pairs, *, ks: Sequence[int] = RETRIEVAL_KS,
                     ridge_grid: Sequence[float] = RIDGE_GRID,
                     groups: Sequence[Hashable] | None = None) -> dict[str, float]:
    """Future-clip retrieval scores on test (see the module docstring), a flat dict of floats:

    - `n` (test queries = gallery size), `chance_r{k}` (= k / n), `ranks` ({scorer: [n] 0-based ranks});
    - `cosine_r{k}`, `predictor_r{k}`, each with `_ci_low` / `_ci_high` (95% Wilson, n = `n`);
    - `predictor_alpha`: the ridge strength chosen on validation (ties keep the stronger; without
      validation pairs the strongest);
    - with `groups` (one id per test pair, its source video): `within_video_n` (queries whose video
      has at least two test pairs), `within_video_chance_r1` (mean of 1 / pairs in the query's video),
      `within_video_cosine_r1`, `within_video_predictor_r1` with their intervals, `within_video_keep`
      ([n] the queries that count) and `within_video_hits` ({scorer: per kept query 1/0}).

    Features of any shape [N, ...] are flattened per clip."""
    for name, split in (("train", train), ("val", val), ("test", test)):
        if len(split) != 2:
            raise ValueError(f"{name}: pass (present, future) features; the test pairs' source videos go in groups=")
    (ptr, ftr), (pva, fva), (pte, fte) = [(flatten_clips(p), flatten_clips(f)) for p, f in (train, val, test)]
    if len(ptr) != len(ftr) or len(pva) != len(fva) or len(pte) != len(fte):
        raise ValueError("present and future features must be row-aligned pairs")
    # One standardiser for present and future clips: they are clips of the same kind, and a shared
    # scale keeps `cosine` a comparison of like with like.
    norm = standardiser(np.concatenate([ptr, ftr]))
    ptr, ftr, pva, fva, pte, fte = (norm(a).astype(np.float64) for a in (ptr, ftr, pva, fva, pte, fte))

    path = RidgePath(ptr, ftr)
    choice = int(np.argmax(ridge_grid))  # the strongest, when nothing can be chosen
    if len(pva):
        # Only the predictor's R@1 on validation pairs decides; the grid is tried strongest first
        # and a tie keeps the earlier (stronger) one.
        order = sorted(range(len(ridge_grid)), key=lambda i: -ridge_grid[i])
        val_r1 = [float((ranks(pred, fva) < 1).mean()) for pred in path.predict(pva, [ridge_grid[i] for i in order])]
        choice = order[int(np.argmax(val_r1))]
    (predicted,) = path.predict(pte, [ridge_grid[choice]])

    n = len(pte)
    out: dict = {"n": n, "predictor_alpha": float(ridge_grid[choice])}
    rank = {"cosine": ranks(pte, fte), "predictor": ranks(predicted, fte)}
    out["ranks"] = rank
    for k in ks:
        out[f"chance_r{k}"] = min(k, n) / max(1, n)
        for name, r in rank.items():
            out.update({f"{name}_r{k}{suffix}": v for suffix, v in _recall(r, k).items()})
    if groups is not None:
        g = np.asarray(groups)
        if len(g) != n:
            raise ValueError(f"groups has {len(g)} entries for {n} test pairs")
        size = (g[:, None] == g[None, :]).sum(1)
        keep = size >= 2  # a video with one test pair has no within-video distractor
        out["within_video_n"] = int(keep.sum())
        out["within_video_keep"] = keep
        out["within_video_chance_r1"] = float((1.0 / size[keep]).mean()) if keep.any() else 0.0
        out["within_video_hits"] = {}
        for name, queries in (("cosine", pte), ("predictor", predicted)):
            r = ranks(queries, fte, g)[keep]
            out["within_video_hits"][name] = (r < 1).astype(np.float64)
            out.update({f"within_video_{name}_r1{suffix}": v for suffix, v in _recall(r, 1).items()})
    return out
