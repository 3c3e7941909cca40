"""The attentive probe (V-JEPA's AttentivePooler + linear head, written in a collapsed form): a learned
query cross-attends to a clip's frozen tokens, so a probe can weigh time slices and read their order."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from videossl.config import AttentiveProbeConfig
from videossl.eval.probes import ProbeScore, Split, probe_score, single_thread, standardiser

INIT_STD = 0.02            # std of the initial query scores and position embeddings (ViT convention)
MLP_RATIO = 4              # the self-attention blocks' hidden width, as in V-JEPA's probe blocks
PCA_SAMPLE_TOKENS = 8192   # training tokens the optional PCA (max_dim) is fit on


def _member_param(generator: torch.Generator, members: int, *shape: int, std: float) -> torch.nn.Parameter:
    """A parameter with one copy per member (weight decay), each starting from the same draw: the grid
    compares regularisation, not luck. The member axis is first (the per-member decay scales it)."""
    draw = torch.randn(*shape, generator=generator) * std
    return torch.nn.Parameter(draw.expand(members, *shape).clone())


class TokenBlocks(torch.nn.Module):
    """`depth` pre-norm transformer blocks (self-attention over a clip's tokens, then a GELU MLP) before
    the pooler, one independent copy per member: V-JEPA 2's deeper probe (num_probe_blocks = depth + 1),
    which can relate tokens to each other before a query pools them. [N, L, D] (shared) or
    [G, N, L, D] (per member) in, [G, N, L, D] out."""

    def __init__(self, depth: int, dim: int, heads: int, members: int, generator: torch.Generator) -> None:
        super().__init__()
        hidden, out_std = MLP_RATIO * dim, INIT_STD / math.sqrt(2 * depth)  # residual branches start small
        param = lambda *shape, std: _member_param(generator, members, depth, *shape, std=std)  # noqa: E731
        self.heads, self.depth, self.members = heads, depth, members
        self.qkv, self.out = param(dim, 3 * dim, std=INIT_STD), param(dim, dim, std=out_std)
        self.fc1, self.fc2 = param(dim, hidden, std=INIT_STD), param(hidden, dim, std=out_std)
        self.qkv_bias, self.out_bias = param(3 * dim, std=0.0), param(dim, std=0.0)
        self.fc1_bias, self.fc2_bias = param(hidden, std=0.0), param(dim, std=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.expand(self.members, *x.shape)
        g, n, length, dim = x.shape
        heads = self.heads
        norm = lambda t: torch.nn.functional.layer_norm(t, (dim,))  # noqa: E731  (affine: absorbed downstream)
        for b in range(self.depth):
            at = lambda w, bias, t: torch.einsum("gnld,gde->gnle", t, w[:, b]) + bias[:, b, None, None]  # noqa: E731
            q, k, v = at(self.qkv, self.qkv_bias, norm(x)).view(g, n, length, 3, heads, dim // heads).unbind(3)
            attn = torch.softmax(torch.einsum("gnlhe,gnmhe->gnhlm", q, k) / math.sqrt(dim // heads), dim=-1)
            x = x + at(self.out, self.out_bias, torch.einsum("gnhlm,gnmhe->gnlhe", attn, v).reshape(g, n, length, dim))
            x = x + at(self.fc2, self.fc2_bias, torch.nn.functional.gelu(at(self.fc1, self.fc1_bias, norm(x))))
        return norm(x)


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
                 generator: torch.Generator, members: int = 1, blocks: int = 1) -> None:
        super().__init__()
        param = lambda *shape, std: _member_param(generator, members, *shape, std=std)  # noqa: E731

        # Per head, one column u_h (attention scores) then `classes` columns M_h (class scores),
        # side by side so a single matrix product gives both and slicing them needs no copy.
        # u_h starts small (near-uniform attention: the probe starts as mean pooling); M_h starts
        # like nn.Linear(H * D, classes) (uniform +-1/sqrt(H*D), i.e. this std).
        self.scores = param(dim, heads, 1, std=INIT_STD)
        self.values = param(dim, heads, classes, std=1.0 / math.sqrt(3 * heads * dim))
        # 1/sqrt(D) on the attention scores, as in scaled dot-product attention: it keeps AdamW's
        # per-coordinate steps from swinging the softmax by ~D * lr per step.
        self.scale = 1.0 / math.sqrt(dim)
        self.bias = torch.nn.Parameter(torch.zeros(members, classes))
        self.position = param(tokens, heads, 1 + classes, std=INIT_STD) if position else None
        # drawn last: a pooler without blocks is the same draw as before they existed
        self.blocks = (TokenBlocks(blocks - 1, dim, heads if dim % heads == 0 else 1, members, generator)
                       if blocks > 1 else None)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [members, N, classes] from layer-normed tokens [N, L, D]."""
        weights = torch.cat([self.scores * self.scale, self.values], dim=3)  # [G, D, H, 1 + C]
        members, _, heads, width = weights.shape
        if self.blocks is not None:  # each member's own tokens: one product per member
            tokens = self.blocks(tokens)
            n, length, _ = tokens.shape[1:]
            proj = torch.einsum("gnld,gdk->nlgk", tokens, weights.flatten(2)).reshape(n, length, members, heads, width)
        else:  # tokens shared by every member: one [N*L, D] x [D, G*H*(1+C)] product
            n, length, dim = tokens.shape
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
                     position: bool, seed: int, blocks: int = 1) -> tuple[Callable[[torch.Tensor], torch.Tensor], float, dict]:
    """(predict, validation accuracy, {"weight_decay", "epochs"}) of the best checkpoint on validation.

    One member per weight decay, trained side by side on the same seeded mini-batches; that is the
    same as training them one after another (their parameters and losses are disjoint), only
    cheaper. AdamW's decoupled decay is applied by hand (p <- p * (1 - lr * wd), then the Adam step,
    exactly torch's AdamW) because each member has its own wd. Ties on validation keep the stronger
    decay, then the earlier epoch."""
    has_val = len(yva) > 0
    generator = torch.Generator().manual_seed(seed)
    model = AttentivePooler(ztr.shape[1], ztr.shape[2], heads, classes, position, generator, len(weight_decays), blocks)
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


def attentive_probe(train: Split, val: Split, test: Split, classes: int,
                    cfg: AttentiveProbeConfig = AttentiveProbeConfig(), *, seed: int = 0) -> ProbeScore:
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
    heads, epochs, batch_size, lr = cfg.heads, cfg.epochs, cfg.batch_size, cfg.lr
    weight_decays, max_dim, position = cfg.weight_decays, cfg.max_dim, cfg.position
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
                                                       batch_size, lr, grid, position, seed, cfg.blocks)
        with torch.no_grad():
            logits = predict(zte).numpy()
    return probe_score(logits.argmax(1), yte, best_acc if has_val else None, best_sel, logits)
