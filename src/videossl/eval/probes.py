"""Probes on frozen features, with honest intervals: linear, attentive (V-JEPA style, eval/attentive.py) and kNN.

Every probe follows one protocol: features are standardised with training statistics, the probe's
hyperparameters are chosen on validation items only (validation videos, never test videos), and the
chosen probe is scored once on test, reported with a 95% Wilson interval.

- `linear_probe`: L2-regularised multinomial logistic regression on [N, F] features, fit full-batch
  with L-BFGS; the L2 strength is chosen on validation.
- `attentive_probe` (eval/attentive.py): cross-attention pooling of [N, L, D] tokens (one learned query, several heads,
  a learned per-token position embedding) followed by a linear classifier, trained with AdamW;
  weight decay and the training epoch are chosen on validation.
- `knn_probe`: cosine k-nearest neighbours with a similarity-weighted vote; k is chosen on validation.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from videossl.config import KnnProbeConfig

WILSON_Z = 1.959964  # two-sided 95%
LBFGS_TOLERANCE = 1e-5  # gradient norm at which a probe fit counts as converged (standardised features)
STD_EPS = 1e-6  # added to training standard deviations so constant features do not divide by zero

# The probes' knobs (l2 grid, k, ...) come from params.yaml's probe_eval section, passed in: their
# defaults have one home, config.py. The attentive probe is eval/attentive.py.

Split = tuple[np.ndarray, np.ndarray]  # (features, integer labels)


@dataclass(frozen=True)
class ProbeScore:
    """One probe's test score. `selected` names every hyperparameter chosen on validation ({"l2": ...}, {"weight_decay": ..., "epochs": ...},
    {"k": ...}); `val_accuracy` is the chosen probe's validation accuracy (None without validation items)."""
    accuracy: float
    n: int
    ci_low: float
    ci_high: float
    predictions: np.ndarray
    val_accuracy: float | None = None
    selected: dict[str, float] = field(default_factory=dict)
    scores: np.ndarray | None = None  # [n, classes] test scores (logits, or kNN vote shares): what matched tasks rank by


def wilson_interval(correct: float, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval for a proportion correct/n (95% by default). `correct` may be
    fractional (ties counted as halves)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval always contains p; at p = 0 or 1 rounding would otherwise leave it 1 ulp short
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def standardiser(train: np.ndarray, axes: tuple[int, ...] = (0,)) -> Callable[[np.ndarray], np.ndarray]:
    """(x - mean) / std with the statistics of `train` over `axes`, as float32. Every probe and metric
    uses it so that no statistic of validation or test items reaches the model."""
    train = np.asarray(train)
    mean = train.mean(axis=axes, keepdims=True, dtype=np.float64)  # float64 sums, no float64 copy
    std = train.std(axis=axes, keepdims=True, dtype=np.float64) + STD_EPS
    mean, scale = mean.astype(np.float32), (1.0 / std).astype(np.float32)
    return lambda a: (np.asarray(a, dtype=np.float32) - mean) * scale


def flatten_clips(a: np.ndarray) -> np.ndarray:
    """[N, ...] -> [N, F] float32, one row per clip (also for N = 0, which reshape(N, -1) rejects)."""
    a = np.asarray(a, dtype=np.float32)
    return a.reshape(len(a), int(np.prod(a.shape[1:], dtype=np.int64)))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting. Every probe and metric here does
    its linear algebra in torch inside this: their products are small (a 256-clip mini-batch, a
    few-hundred-square similarity matrix), too small to split across threads, and with other
    processes on the cores a second thread turns each op into a synchronisation wait. Measured on
    2 busy cores: attentive probe 5-10x slower on 2 threads; numpy's multithreaded OpenBLAS took
    2.5 s for an SVD that takes 0.02 s on one thread (hence torch, whose threads this controls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def probe_score(pred: np.ndarray, y: np.ndarray, val_accuracy: float | None, selected: dict,
                scores: np.ndarray | None = None) -> ProbeScore:
    correct = int((pred == y).sum())
    lo, hi = wilson_interval(correct, len(y))
    return ProbeScore(correct / max(1, len(y)), len(y), lo, hi, pred, val_accuracy, selected, scores)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Counts [classes, classes], int64: row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    out = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(out, (y_true, y_pred), 1)
    return out


def per_class(classes: list[str], confusions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per class: its test units (`n`: clips, or videos) and each model's recall (right / units of the class), from the
    models' confusion matrices (rows: true class)."""
    out = {}
    for i, name in enumerate(classes):
        n = int(next(iter(confusions.values()))[i].sum()) if confusions else 0
        out[name] = {"n": n, **{m: round(float(c[i, i]) / n, 4) if n else float("nan") for m, c in confusions.items()}}
    return out


# --- linear probe -------------------------------------------------------------------------------

def _fit(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, iters: int,
         init: torch.nn.Linear | None = None) -> torch.nn.Linear:
    """Multinomial logistic regression, L2 on the weights; warm-started from `init` when given
    (the grid runs from strong to weak regularisation, so each fit starts near its optimum)."""
    model = torch.nn.Linear(x.shape[1], classes, dtype=x.dtype)
    if init is None:
        torch.nn.init.zeros_(model.weight)
        torch.nn.init.zeros_(model.bias)
    else:
        model.load_state_dict(init.state_dict())
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=iters, history_size=20,
                            tolerance_grad=LBFGS_TOLERANCE, tolerance_change=LBFGS_TOLERANCE * 1e-3,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def linear_probe(train: Split, val: Split, test: Split, classes: int, l2_grid: list[float], iters: int) -> ProbeScore:
    """Linear probe on [N, F] features; the L2 strength is chosen on validation (ties keep the stronger)."""
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
    norm = standardiser(xtr)
    xtr_t, xva_t, xte_t = (torch.from_numpy(norm(a)) for a in (xtr, xva, xte))
    ytr_t = torch.from_numpy(np.asarray(ytr)).long()
    best, best_l2, best_acc, previous = None, None, -1.0, None
    for l2 in sorted(l2_grid, reverse=True):  # model selection on validation videos only
        with single_thread():  # L-BFGS on a [N, F] matrix: 10x faster on one thread on busy cores
            previous = _fit(xtr_t, ytr_t, classes, l2, iters, init=previous)
        with torch.no_grad():
            acc = float((previous(xva_t).argmax(1).numpy() == yva).mean()) if len(yva) else 0.0
        if acc > best_acc:  # ties keep the stronger regularisation
            best, best_l2, best_acc = previous, l2, acc
    with torch.no_grad():
        logits = best(xte_t).numpy()
    return probe_score(logits.argmax(1), yte, best_acc if len(yva) else None, {"l2": best_l2}, logits)


# --- kNN probe ----------------------------------------------------------------------------------

def _knn_votes(sims: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, k: int, classes: int,
               temperature: float) -> np.ndarray:
    """Each class's share of the top-k neighbours' votes [N, classes]: vote weight exp(cosine / T) per neighbour."""
    idx = order[:, :k]
    weights = torch.exp(torch.gather(sims, 1, idx).double() / temperature)
    votes = torch.zeros(len(sims), classes, dtype=torch.float64).scatter_add_(1, labels[idx], weights)
    return (votes / votes.sum(1, keepdim=True)).numpy()


def knn_probe(train: Split, val: Split, test: Split, classes: int, cfg: KnnProbeConfig = KnnProbeConfig()) -> ProbeScore:
    """k-nearest-neighbour probe on features [N, ...] (trailing dims are flattened).

    Features are standardised with training statistics and L2-normalised, so similarity is cosine.
    Each of the k most similar training items votes for its label with weight exp(cosine / T)
    (DINO's weighted kNN: near neighbours count more, far ones still break ties). k is chosen on
    validation from `ks` (capped at N_train; ties keep the larger k, the smoother rule; without
    validation items the largest). Deterministic: equal similarities rank the lower training index
    first (stable sort), equal votes pick the lower class index. No random state."""
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
    ks, temperature = cfg.ks, cfg.temperature
    norm = standardiser(flatten_clips(xtr))

    def unit(a: np.ndarray) -> torch.Tensor:
        z = torch.from_numpy(norm(flatten_clips(a)))
        return z / z.norm(dim=1, keepdim=True).clamp_min(STD_EPS)

    candidates = sorted({min(int(k), len(xtr)) for k in ks}, reverse=True)
    best_k, best_acc = candidates[0], -1.0
    with single_thread():
        ztr, labels = unit(xtr), torch.from_numpy(np.asarray(ytr, dtype=np.int64))

        def neighbours(a: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            sims = unit(a) @ ztr.T
            return sims, torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :candidates[0]]

        if len(yva):
            sims, order = neighbours(xva)
            for k in candidates:
                acc = float((_knn_votes(sims, labels, order, k, classes, temperature).argmax(1) == yva).mean())
                if acc > best_acc:
                    best_k, best_acc = k, acc
        sims, order = neighbours(xte)
        votes = _knn_votes(sims, labels, order, best_k, classes, temperature)
    # equal votes: the lowest class index (argmax returns the first)
    return probe_score(votes.argmax(1), np.asarray(yte), best_acc if len(yva) else None, {"k": best_k}, votes)
