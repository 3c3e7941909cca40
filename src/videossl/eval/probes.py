"""Probes on frozen features, with honest intervals: linear, attentive (V-JEPA style) and kNN.

Every probe follows one protocol: features are standardised with training statistics, the probe's
hyperparameters are chosen on validation items only (validation videos, never test videos), and the
chosen probe is scored once on test, reported with a 95% Wilson interval.

- `linear_probe`: L2-regularised multinomial logistic regression on [N, F] features, fit full-batch
  with L-BFGS; the L2 strength is chosen on validation.
- `attentive_probe`: cross-attention pooling of [N, L, D] tokens (one learned query, several heads,
  a learned per-token position embedding) followed by a linear classifier, trained with AdamW;
  weight decay and the training epoch are chosen on validation.
- `knn_probe`: cosine k-nearest neighbours with a similarity-weighted vote; k is chosen on validation.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

WILSON_Z = 1.959964  # two-sided 95%
LBFGS_TOLERANCE = 1e-5  # gradient norm at which a probe fit counts as converged (standardised features)
STD_EPS = 1e-6  # added to training standard deviations so constant features do not divide by zero

# Attentive probe defaults (params.yaml probe_eval.attentive.*, the keyword names of attentive_probe).
# Chosen so that one probe on N=1500 clips x 16 tokens x 192 dims takes about a second on one core
# (0.8-1.1 s measured on a busy 2-core machine) while a planted order signal is still learnt.
ATTENTIVE_HEADS = 4            # attention distributions over the tokens; each can pick a different time slice
ATTENTIVE_EPOCHS = 20          # passes over the training clips (every weight decay trains in the same passes)
ATTENTIVE_BATCH = 256          # clips per AdamW step: ~6 steps per pass at N=1500
ATTENTIVE_LR = 3e-2            # Adam learning rate (standardised, layer-normed tokens); 20 passes converge
ATTENTIVE_WEIGHT_DECAYS = (0.5, 0.05, 0.005)  # AdamW decoupled weight decay, chosen on validation
ATTENTIVE_INIT_STD = 0.02      # std of the initial query scores and position embeddings (ViT convention)
PCA_SAMPLE_TOKENS = 8192       # training tokens the optional PCA (max_dim) is fit on

# kNN probe defaults (params.yaml probe_eval.knn.*).
KNN_KS = (1, 5, 10, 20, 50)    # neighbour counts tried on validation
KNN_TEMPERATURE = 0.07         # vote weight exp(cosine / T), as in DINO's kNN evaluation

Split = tuple[np.ndarray, np.ndarray]  # (features, integer labels)


@dataclass(frozen=True)
class ProbeScore:
    """One probe's test score. `l2` is the regularisation chosen on validation: the L2 strength
    (linear), the AdamW weight decay (attentive), 0.0 for kNN (no weights). `selected` names every
    hyperparameter chosen on validation ({"l2": ...}, {"weight_decay": ..., "epochs": ...},
    {"k": ...}); `val_accuracy` is the chosen probe's validation accuracy (None without validation items)."""
    accuracy: float
    n: int
    ci_low: float
    ci_high: float
    l2: float
    predictions: np.ndarray
    val_accuracy: float | None = None
    selected: dict[str, float] = field(default_factory=dict)


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


def _score(pred: np.ndarray, y: np.ndarray, l2: float, val_accuracy: float | None, selected: dict) -> ProbeScore:
    correct = int((pred == y).sum())
    lo, hi = wilson_interval(correct, len(y))
    return ProbeScore(correct / max(1, len(y)), len(y), lo, hi, l2, pred, val_accuracy, selected)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Counts [classes, classes], int64: row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    out = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(out, (y_true, y_pred), 1)
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
        pred = best(xte_t).argmax(1).numpy()
    return _score(pred, yte, best_l2, best_acc if len(yva) else None, {"l2": best_l2})


# --- attentive probe ----------------------------------------------------------------------------

class AttentivePooler(torch.nn.Module):
    """One learned query cross-attending to L frozen tokens with H heads, then a linear classifier;
    `members` independent copies (one per weight decay of the grid) trained side by side.

    This is V-JEPA's attentive probe (AttentivePooler + linear head, one query) written in its
    collapsed form. With a single query q, head h's attention logit for token x_l is
    (W_q^h q) . (W_k^h x_l) / sqrt(d) = u_h . x_l + const, so the query and key projections reduce to
    one learned score vector u_h per head (the constant, from the key bias, cancels in the softmax).
    The value projection, output projection and linear classifier are all linear after the
    attention-weighted sum, so together they are one matrix M_h [classes, D] per head:
    logits = sum_h M_h (sum_l a_hl x_l) + b = sum_h sum_l a_hl (M_h x_l) + b. Same function class
    (V-JEPA's residual MLP aside; with classes <= head dim the low-rank value/output product is no
    restriction). Computed as one [N*L, D] x [D, members*H*(1+classes)] product per step: reading the
    tokens dominates, so training the whole weight-decay grid at once costs little more than one.

    Why a learned position embedding (V-JEPA has none in its probe; its encoder adds positions to
    the tokens): attention pooling is a weighted sum, and a weighted sum is permutation invariant
    over the tokens. Fed spatially pooled tokens in time order, a pooler without positions would be
    blind to the order of time (forward and reversed clips would pool to the same vector) unless the
    encoder itself wrote the position into each token. A learned embedding e_l added to token l lets
    a head both attend by position (u_h . e_l, a per-position logit, e.g. "the first time slice")
    and carry where it attended into the class scores (sum_l a_hl M_h e_l), so the probe reads order
    from the frozen features instead of requiring the encoder to encode it. e_l enters only through
    those two products, so they are learned directly: `position[:, l, h]` holds a logit bias and a
    class-score contribution per token and head, the same function class as a free e_l of
    D >= H * (1 + classes) dimensions. `position=False` removes it (the control that shows the
    difference)."""

    def __init__(self, tokens: int, dim: int, heads: int, classes: int, position: bool,
                 generator: torch.Generator, members: int = 1) -> None:
        super().__init__()

        def param(*shape: int, std: float) -> torch.nn.Parameter:
            # every member starts from the same draw: the grid compares regularisation, not luck
            draw = torch.randn(*shape, generator=generator) * std
            return torch.nn.Parameter(draw.expand(members, *shape).clone())

        # Per head, one column u_h (attention scores) then `classes` columns M_h (class scores),
        # side by side so a single matrix product gives both and slicing them needs no copy.
        # u_h starts small (near-uniform attention: the probe starts as mean pooling); M_h starts
        # like nn.Linear(H * D, classes) (uniform +-1/sqrt(H*D), i.e. this std).
        self.scores = param(dim, heads, 1, std=ATTENTIVE_INIT_STD)
        self.values = param(dim, heads, classes, std=1.0 / math.sqrt(3 * heads * dim))
        # 1/sqrt(D) on the attention scores, as in scaled dot-product attention: it keeps AdamW's
        # per-coordinate steps from swinging the softmax by ~D * lr per step.
        self.scale = 1.0 / math.sqrt(dim)
        self.bias = torch.nn.Parameter(torch.zeros(members, classes))
        self.position = param(tokens, heads, 1 + classes, std=ATTENTIVE_INIT_STD) if position else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [members, N, classes] from layer-normed tokens [N, L, D]."""
        n, length, dim = tokens.shape
        weights = torch.cat([self.scores * self.scale, self.values], dim=3)  # [G, D, H, 1 + C]
        members, _, heads, width = weights.shape
        proj = tokens.reshape(n * length, dim) @ weights.permute(1, 0, 2, 3).reshape(dim, -1)
        proj = proj.view(n, length, members, heads, width)
        if self.position is not None:
            proj = proj + self.position.transpose(0, 1)  # [L, G, H, 1 + C]
        attn = torch.softmax(proj[..., 0], dim=1)  # [N, L, G, H], over tokens
        out = (attn.unsqueeze(-1) * proj[..., 1:]).sum(dim=(1, 3))  # [N, G, C]
        return out.transpose(0, 1) + self.bias.unsqueeze(1)


def _token_projection(train: np.ndarray, max_dim: int | None, seed: int) -> torch.Tensor | None:
    """PCA basis [D, max_dim] of standardised training tokens when D > max_dim, else None. Fit on a
    seeded sample of tokens: the top components are stable long before all N*L tokens are seen."""
    flat = train.reshape(-1, train.shape[-1])
    if max_dim is None or flat.shape[1] <= max_dim:
        return None
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(flat), size=min(len(flat), PCA_SAMPLE_TOKENS), replace=False))
    sample = torch.from_numpy(flat[rows])
    _, vecs = torch.linalg.eigh((sample.T @ sample).double() / len(sample))  # ascending eigenvalues
    return vecs[:, -max_dim:].flip(1).float()


def _train_attentive(ztr: torch.Tensor, ytr: torch.Tensor, zva: torch.Tensor, yva: np.ndarray, classes: int,
                     heads: int, epochs: int, batch_size: int, lr: float, weight_decays: list[float],
                     position: bool, seed: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], float, dict]:
    """(predict, validation accuracy, {"weight_decay", "epochs"}) of the best checkpoint on validation.

    One member per weight decay, trained side by side on the same seeded mini-batches; that is the
    same as training them one after another (their parameters and losses are disjoint), only
    cheaper. AdamW's decoupled decay is applied by hand (p <- p * (1 - lr * wd), then the Adam step,
    exactly torch's AdamW) because each member has its own wd. Ties on validation keep the stronger
    decay, then the earlier epoch."""
    has_val = len(yva) > 0
    generator = torch.Generator().manual_seed(seed)
    model = AttentivePooler(ztr.shape[1], ztr.shape[2], heads, classes, position, generator, len(weight_decays))
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    shrink = 1.0 - lr * torch.tensor(weight_decays, dtype=torch.float32)
    best: list[tuple[float, int, dict]] = [(-1.0, 0, {})] * len(weight_decays)  # per member
    for epoch in range(1, epochs + 1):
        for batch in torch.randperm(len(ztr), generator=generator).split(batch_size):
            opt.zero_grad(set_to_none=True)
            logits = model(torch.index_select(ztr, 0, batch))  # [G, B, C]; 2x faster than ztr[batch]
            target = torch.index_select(ytr, 0, batch).repeat(len(weight_decays))
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target)  # sum of the members' means
            (loss * len(weight_decays)).backward()
            with torch.no_grad():
                for p in params:
                    p.mul_(shrink.view(-1, *[1] * (p.dim() - 1)))
            opt.step()
        if not has_val and epoch != epochs:
            continue
        with torch.no_grad():
            accs = ((model(zva).argmax(2).numpy() == yva).mean(1) if has_val else np.zeros(len(weight_decays)))
        for g, acc in enumerate(accs):
            if acc > best[g][0]:
                best[g] = (float(acc), epoch, {k: v[g].detach().clone() for k, v in model.state_dict().items()})
    g = int(np.argmax([b[0] for b in best]))  # the first maximum: the strongest decay among ties
    acc, epoch, state = best[g]
    model.load_state_dict({k: v.unsqueeze(0).expand_as(model.state_dict()[k]).clone() for k, v in state.items()})
    return (lambda z: model(z)[0]), acc, {"weight_decay": float(weight_decays[g]), "epochs": epoch}


def attentive_probe(train: Split, val: Split, test: Split, classes: int, *,
                    heads: int = ATTENTIVE_HEADS, epochs: int = ATTENTIVE_EPOCHS,
                    batch_size: int = ATTENTIVE_BATCH, lr: float = ATTENTIVE_LR,
                    weight_decays: Sequence[float] = ATTENTIVE_WEIGHT_DECAYS,
                    max_dim: int | None = None, position: bool = True, seed: int = 0) -> ProbeScore:
    """Attentive probe on token features [N, L, D] (L tokens per clip in a fixed order, e.g. time
    slices). Returns the test score of the probe chosen on validation.

    Tokens are standardised per dimension with training statistics (pooled over clips and token
    positions, so position-dependent means survive), optionally PCA-projected to `max_dim`
    dimensions when wider, and layer-normed (no affine: a learned LN gain and bias are absorbed by
    the score vectors and the classifier). The PCA is off by default: it keeps the high-variance
    directions, and in features dominated by appearance the temporal signal can sit in low-variance
    ones (on planted-signal tokens of D=1152 a 256-dim PCA cost 7 points of accuracy); it saves
    ~40% of the time on wide raw-pixel tokens (2.4 s instead of 4.0 s at N=1500, L=16, D=1152).

    For each weight decay an `AttentivePooler` is trained from the same seeded initialisation with
    AdamW on the same seeded mini-batches for `epochs` passes (all decays side by side, see
    `_train_attentive`); after every pass each one's validation accuracy is checked and the best
    (weight decay, epoch) is kept (early stopping, on validation only): ties keep the stronger
    decay, then the earlier epoch. Without validation items the last epoch at the strongest decay is
    used. Deterministic given `seed` (training always runs on one torch thread, so the caller's
    thread count cannot change the sums)."""
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
    if np.ndim(xtr) != 3:
        raise ValueError(f"attentive_probe takes token features [N, L, D], got shape {np.shape(xtr)}")
    norm = standardiser(xtr, axes=(0, 1))
    xtr_n, xva_n, xte_n = norm(xtr), norm(xva), norm(xte)
    ytr_t = torch.from_numpy(np.asarray(ytr)).long()
    has_val = len(yva) > 0
    # Without validation items nothing can be chosen: the strongest decay, trained for all epochs.
    grid = sorted(weight_decays, reverse=True) if has_val else [max(weight_decays)]
    with single_thread():
        basis = _token_projection(xtr_n, max_dim, seed)

        def prepare(z: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(z)
            t = t if basis is None else t @ basis
            return torch.nn.functional.layer_norm(t, t.shape[-1:])

        ztr, zva, zte = prepare(xtr_n), prepare(xva_n), prepare(xte_n)
        predict, best_acc, best_sel = _train_attentive(ztr, ytr_t, zva, np.asarray(yva), classes, heads, epochs,
                                                       batch_size, lr, grid, position, seed)
        with torch.no_grad():
            pred = predict(zte).argmax(1).numpy()
    return _score(pred, yte, best_sel["weight_decay"], best_acc if has_val else None, best_sel)


# --- kNN probe ----------------------------------------------------------------------------------

def _knn_votes(sims: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, k: int, classes: int,
               temperature: float) -> np.ndarray:
    """Predicted classes from the top-k neighbours: vote weight exp(cosine / T) per neighbour."""
    idx = order[:, :k]
    weights = torch.exp(torch.gather(sims, 1, idx).double() / temperature)
    votes = torch.zeros(len(sims), classes, dtype=torch.float64).scatter_add_(1, labels[idx], weights)
    return votes.argmax(1).numpy()  # equal votes: the lowest class index (argmax returns the first)


def knn_probe(train: Split, val: Split, test: Split, classes: int, *, ks: Sequence[int] = KNN_KS,
              temperature: float = KNN_TEMPERATURE) -> ProbeScore:
    """k-nearest-neighbour probe on features [N, ...] (trailing dims are flattened).

    Features are standardised with training statistics and L2-normalised, so similarity is cosine.
    Each of the k most similar training items votes for its label with weight exp(cosine / T)
    (DINO's weighted kNN: near neighbours count more, far ones still break ties). k is chosen on
    validation from `ks` (capped at N_train; ties keep the larger k, the smoother rule; without
    validation items the largest). Deterministic: equal similarities rank the lower training index
    first (stable sort), equal votes pick the lower class index. No random state."""
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
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
                acc = float((_knn_votes(sims, labels, order, k, classes, temperature) == yva).mean())
                if acc > best_acc:
                    best_k, best_acc = k, acc
        sims, order = neighbours(xte)
        pred = _knn_votes(sims, labels, order, best_k, classes, temperature)
    return _score(pred, np.asarray(yte), 0.0, best_acc if len(yva) else None, {"k": best_k})
