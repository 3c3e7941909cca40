"""Arrow of time on real footage: leave one source group out, with or without the codec control.

Real videos have no labels, but every clip has a direction: each window is used forward (label 1)
and reversed (label 0). Real footage is scarce (the bundled samples are three groups), so the score
is leave-one-group-out: for each group, a linear probe is trained on the other groups' videos and
tested on the held-out group; the test predictions of all folds are pooled (each clip is tested
exactly once) into one accuracy with a 95% Wilson interval. Groups, not files, are held out: the
manifest's `group` keeps two encodings of one footage (carphone pristine / distorted) together.

Model selection never sees the test group: the L2 strength is chosen on the last `val_fraction` of
each training video's frames, windows there do not overlap training windows.

Clips from one video overlap and share a scene, so test items are not independent and the Wilson
interval is optimistic; the per-group accuracies are reported beside it for that reason.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

from videossl.data.shards import ClipStore, Video
from videossl.eval import features
from videossl.eval.codec_control import codec_control
from videossl.eval.probes import linear_probe, wilson_interval
from videossl.eval.tasks import ClipKey

CLASSES = ("backward", "forward")
BACKWARD, FORWARD = 0, 1
TIE_CREDIT = 0.5     # a clip its featurizer cannot tell from its reverse: a coin flip, in each direction


@dataclass(frozen=True)
class RealClip:
    video: str              # source id
    start: int              # first frame of the window (in stored frames)
    reversed: bool = False  # played backwards: label BACKWARD
    control: bool = False   # codec control applied (see videossl.eval.codec_control)


@dataclass
class Fold:
    test_group: str
    train: list[tuple[RealClip, int]] = field(default_factory=list)
    val: list[tuple[RealClip, int]] = field(default_factory=list)
    test: list[tuple[RealClip, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ArrowScore:
    accuracy: float            # pooled over all folds' test clips
    n: int
    ci_low: float              # 95% Wilson interval of `accuracy`
    ci_high: float
    forward_accuracy: float    # on forward test clips only (n / 2 of them)
    forward_ci: tuple[float, float]
    backward_accuracy: float   # on reversed test clips only (n / 2 of them)
    backward_ci: tuple[float, float]
    indistinguishable: float   # share of test pairs whose forward and reversed features are identical
    fold_accuracy: dict[str, float]
    fold_n: dict[str, int]
    credit: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n] per test clip, folds in order
    videos: list[str] = field(default_factory=list)                  # [n] the test clips' source videos

    def to_dict(self) -> dict:
        return asdict(self)


def evenly_spaced(first: int, last: int, n: int) -> list[int]:
    """Up to `n` evenly spaced integers in [first, last] (none when the range is empty)."""
    if last < first or n < 1:
        return []
    return sorted(set(np.linspace(first, last, num=min(n, last - first + 1)).round().astype(int).tolist()))


def _pairs(video: Video, starts: list[int], control: bool) -> list[tuple[RealClip, int]]:
    items = []
    for s in starts:
        items.append((RealClip(video.source_id, s, False, control), FORWARD))
        items.append((RealClip(video.source_id, s, True, control), BACKWARD))
    return items


def real_arrow_tasks(store: ClipStore, clips_per_video: int, control: bool, val_fraction: float,
                     kind: str = "real") -> list[Fold]:
    """One fold per source group of `kind` videos: that group's clips are the test set.

    Test videos give `clips_per_video` windows over their whole length; training videos give
    `clips_per_video` windows before their last `val_fraction` and a proportional number inside it
    (validation). A video too short for both sides trains only. Every window appears forward and
    reversed, so each set is balanced."""
    t = store.clip_frames
    groups = {v.source_id: v.group for v in store.videos}
    videos = store.videos_in(kind=kind)
    names = sorted({groups[v.source_id] for v in videos})
    if len(names) < 2:
        raise ValueError(f"leave-one-group-out needs at least 2 groups of {kind!r} videos, found {names}")
    n_val = max(1, int(round(clips_per_video * val_fraction)))
    folds = []
    for held_out in names:
        fold = Fold(held_out)
        for v in videos:
            if groups[v.source_id] == held_out:
                fold.test += _pairs(v, evenly_spaced(0, v.frames - t, clips_per_video), control)
                continue
            cut = int(round(v.frames * (1 - val_fraction)))
            if cut - t < 0 or v.frames - t < cut:  # no room for a window on both sides of the cut
                fold.train += _pairs(v, evenly_spaced(0, v.frames - t, clips_per_video), control)
                continue
            fold.train += _pairs(v, evenly_spaced(0, cut - t, clips_per_video), control)
            fold.val += _pairs(v, evenly_spaced(cut, v.frames - t, n_val), control)
        folds.append(fold)
    return folds


def _has_val_windows(frames: int, t: int, val_fraction: float) -> bool:
    cut = int(round(frames * (1 - val_fraction)))  # the same cut real_arrow_tasks makes
    return cut - t >= 0 and frames - t >= cut


def min_val_frames(t: int, val_fraction: float) -> int:
    """The fewest frames a training video needs to give windows on both sides of its validation cut."""
    return next(n for n in range(t, 100 * t + 2) if _has_val_windows(n, t, val_fraction))


def check_folds(folds: list[Fold], store: ClipStore, val_fraction: float, fps: float) -> None:
    """ValueError, before any feature is extracted, when a fold cannot choose its probe: no training
    video of the other groups is long enough to hold validation windows (the probe's L2 is chosen there)."""
    t = store.clip_frames
    need = min_val_frames(t, val_fraction)
    lengths = {v.source_id: v.frames for v in store.videos}
    for fold in folds:
        if fold.val and fold.train:
            continue
        longest = max((lengths[c.video] for c, _ in fold.train), default=0)
        raise ValueError(
            f"real_arrow_of_time: holding out footage group {fold.test_group!r} leaves no training video long enough "
            f"to validate on: a video needs at least {need} frames ({need / fps:.1f} s at ingest.fps {fps:g}) to give "
            f"{t}-frame windows on both sides of its last {val_fraction:g} (probe_eval.real.val_fraction); the longest "
            f"other video has {longest}. Ingest longer footage, or more footage groups with one long video each")


def real_clip_pixels(store: ClipStore, clip: RealClip, sigma: float, tau: float) -> np.ndarray:
    """uint8 [T, H, W, 3] as the model sees the clip. The control is order-free (it commutes with
    reversal), so applying it before reversing treats both directions identically."""
    frames = store.window(store.by_id[clip.video], clip.start, store.clip_frames)
    if clip.control:
        frames = codec_control(frames, sigma, tau)
    return np.ascontiguousarray(frames[::-1]) if clip.reversed else frames


def real_features(store: ClipStore, folds: list[Fold], models: list[features.FeatureModel], batch: int,
                  cache: features.FeatureCache, sigma: float, tau: float) -> dict[str, dict[RealClip, np.ndarray]]:
    """{model: {clip: vector}} for every distinct clip of the folds (folds share clips), through the
    benchmark's one extraction path (batched, cached; controlled clips cached apart)."""
    clips = sorted({c for f in folds for c, _ in f.train + f.val + f.test},
                   key=lambda c: (c.video, c.start, c.reversed, c.control))
    out: dict[str, dict[RealClip, np.ndarray]] = {m.name: {} for m in models}
    for control in (False, True):
        part = [c for c in clips if c.control == control]
        if not part:
            continue
        keys = [ClipKey(c.video, c.start, reversed=c.reversed) for c in part]
        read = (lambda k: real_clip_pixels(store, RealClip(k.video, k.start, k.reversed, True), sigma, tau)) if control else None
        variant = cache.with_variant(f"codec-control|sigma={sigma}|tau={tau}") if control else cache
        for name, feats in features.extract(store, keys, models, batch, variant, pixels=read).items():
            out[name].update(zip(part, feats.vectors))
    return out


def _twin(clip: RealClip) -> RealClip:
    return RealClip(clip.video, clip.start, not clip.reversed, clip.control)


def arrow_score(folds: list[Fold], feats: Mapping[RealClip, np.ndarray], l2_grid: list[float],
                iters: int) -> ArrowScore:
    """Leave-one-group-out arrow of time for one model's features (`real_features`): a linear probe
    per fold, test predictions pooled.

    A test clip whose features equal its reversed twin's cannot be told from it by any probe; the
    probe's arg-max would give both the first class ("backward") and report 1.0 for backward, 0.0
    for forward, which measures a tie-break rule, not the model. Such clips count `TIE_CREDIT` in
    each direction (the pair still counts one right, one wrong overall, as the arg-max does)."""
    def split(items: list[tuple[RealClip, int]]) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([feats[c] for c, _ in items]), np.array([y for _, y in items], dtype=np.int64)

    credit, labels, tied, videos = [], [], [], []
    fold_accuracy, fold_n = {}, {}
    for fold in folds:
        test = split(fold.test)
        score = linear_probe(split(fold.train), split(fold.val), test, len(CLASSES), list(l2_grid), iters)
        ties = np.array([np.array_equal(feats[c], feats[_twin(c)]) for c, _ in fold.test])
        y = test[1]
        credit.append(np.where(ties, TIE_CREDIT, (score.predictions == y).astype(float)))
        labels.append(y)
        tied.append(ties)
        videos += [c.video for c, _ in fold.test]
        fold_accuracy[fold.test_group], fold_n[fold.test_group] = score.accuracy, score.n
    credit_all, y_all, tied_all = np.concatenate(credit), np.concatenate(labels), np.concatenate(tied)
    n = len(y_all)
    lo, hi = wilson_interval(float(credit_all.sum()), n)
    fwd, bwd = credit_all[y_all == FORWARD], credit_all[y_all == BACKWARD]
    return ArrowScore(
        accuracy=float(credit_all.mean()), n=n, ci_low=lo, ci_high=hi,
        forward_accuracy=float(fwd.mean()), forward_ci=wilson_interval(float(fwd.sum()), len(fwd)),
        backward_accuracy=float(bwd.mean()), backward_ci=wilson_interval(float(bwd.sum()), len(bwd)),
        indistinguishable=float(tied_all.mean()),
        fold_accuracy=fold_accuracy, fold_n=fold_n, credit=credit_all, videos=videos)
