"""Linear probes on frozen features, with honest intervals.

Features are standardised with training statistics; an L2-regularised multinomial logistic
regression is fit full-batch with L-BFGS. The L2 strength is chosen on validation videos, never on
test videos; the chosen probe is then scored once on test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

WILSON_Z = 1.959964  # two-sided 95%
LBFGS_TOLERANCE = 1e-5  # gradient norm at which a probe fit counts as converged (standardised features)


@dataclass(frozen=True)
class ProbeScore:
    accuracy: float
    n: int
    ci_low: float
    ci_high: float
    l2: float
    predictions: np.ndarray


def wilson_interval(correct: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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


def linear_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], classes: int, l2_grid: list[float], iters: int) -> ProbeScore:
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    norm = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    xtr_t, xva_t, xte_t = norm(xtr), norm(xva), norm(xte)
    ytr_t = torch.from_numpy(ytr).long()
    best, best_l2, best_acc, previous = None, None, -1.0, None
    for l2 in sorted(l2_grid, reverse=True):  # model selection on validation videos only
        previous = _fit(xtr_t, ytr_t, classes, l2, iters, init=previous)
        with torch.no_grad():
            acc = float((previous(xva_t).argmax(1).numpy() == yva).mean()) if len(yva) else 0.0
        if acc > best_acc:  # ties keep the stronger regularisation
            best, best_l2, best_acc = previous, l2, acc
    with torch.no_grad():
        pred = best(xte_t).argmax(1).numpy()
    correct = int((pred == yte).sum())
    lo, hi = wilson_interval(correct, len(yte))
    return ProbeScore(correct / max(1, len(yte)), len(yte), lo, hi, best_l2, pred)
