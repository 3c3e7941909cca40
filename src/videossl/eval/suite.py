"""The benchmark's probes over one task's frozen features: every model x every probe, same splits.

Classification tasks: linear (primary), attentive and kNN probes, each trained on training videos,
tuned on validation videos and scored once on test videos, with a 95% interval. Retrieval: R@1/R@5
of the future clip by cosine similarity and through a learned linear predictor. Results are flat
dicts (`<model>` = the primary score, `<model>_<probe>` the others), the shape metrics.json keeps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videossl.config import ProbeEvalConfig
from videossl.data.shards import ClipStore
from videossl.eval import probes, real_video, retrieval
from videossl.eval.features import ClipFeatures, FeatureCache, FeatureModel
from videossl.eval.tasks import ClipKey, RetrievalTask, Task
from videossl.eval.time_vector import time_vector

VAL_EVERY = 4  # no validation videos (tiny datasets): every 4th training item validates instead


def held_out(n_train: int) -> np.ndarray:
    """Which training items validate when there are no validation videos (a boolean mask)."""
    return np.arange(n_train) % VAL_EVERY == VAL_EVERY - 1


@dataclass
class Split:
    rows: np.ndarray    # feature rows
    labels: np.ndarray


def splits_of(task: Task, index: dict[ClipKey, int]) -> dict[str, Split]:
    out = {s: Split(np.array([index[k] for k, _ in items], dtype=np.int64),
                    np.array([y for _, y in items], dtype=np.int64)) for s, items in task.items.items()}
    if len(out["val"].labels) == 0:
        hold = held_out(len(out["train"].labels))
        tr = out["train"]
        out["train"], out["val"] = Split(tr.rows[~hold], tr.labels[~hold]), Split(tr.rows[hold], tr.labels[hold])
    return out


def _score(prefix: str, s: probes.ProbeScore) -> dict:
    return {prefix: round(s.accuracy, 4), f"{prefix}_ci_low": round(s.ci_low, 4),
            f"{prefix}_ci_high": round(s.ci_high, 4)}


def classify(task: Task, feats: dict[str, ClipFeatures], index: dict[ClipKey, int], cfg: ProbeEvalConfig,
             seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Scores of every model and probe on one task, and each model's primary-probe test predictions
    (for the confusion matrices)."""
    sp = splits_of(task, index)
    n_classes = len(task.classes)
    out: dict = {"n_test": int(len(sp["test"].labels)), "chance": round(1.0 / n_classes, 4)}
    predictions = {"_labels": sp["test"].labels}
    for name, f in feats.items():
        vec = lambda s: (f.vectors[sp[s].rows], sp[s].labels)  # noqa: E731
        tok = lambda s: (f.tokens[sp[s].rows], sp[s].labels)  # noqa: E731
        for probe in cfg.probes:
            if probe == "linear":
                s = probes.linear_probe(vec("train"), vec("val"), vec("test"), n_classes, cfg.l2_grid, cfg.epochs)
                out.update(_score(name, s))
                out[f"{name}_l2"] = s.l2
                predictions[name] = s.predictions
            elif probe == "attentive":
                s = probes.attentive_probe(tok("train"), tok("val"), tok("test"), n_classes,
                                           **cfg.attentive.model_dump(), seed=seed)
                out.update(_score(f"{name}_attentive", s))
            elif probe == "knn":
                s = probes.knn_probe(vec("train"), vec("val"), vec("test"), n_classes, ks=cfg.knn.ks,
                                     temperature=cfg.knn.temperature)
                out.update(_score(f"{name}_knn", s))
                out[f"{name}_knn_k"] = s.selected["k"]
    return out, predictions


def retrieve(task: RetrievalTask, feats: dict[str, ClipFeatures], index: dict[ClipKey, int],
             cfg: ProbeEvalConfig) -> dict:
    """R@k of each model: `<model>` = cosine R@1 (the primary score), `<model>_r5`, `<model>_predictor`
    (R@1 through the learned predictor), `<model>_predictor_r5`, `<model>_within_video` (R@1 among the
    same video's futures only), each with its interval."""
    out: dict = {}
    for name, f in feats.items():
        pairs = {s: (f.vectors[[index[q] for q, _ in task.pairs[s]]], f.vectors[[index[t] for _, t in task.pairs[s]]])
                 for s in task.pairs}
        if not len(pairs["val"][0]):  # no validation videos: every 4th training pair validates instead
            hold = held_out(len(pairs["train"][0]))
            pairs["val"] = tuple(a[hold] for a in pairs["train"])
            pairs["train"] = tuple(a[~hold] for a in pairs["train"])
        r = retrieval.retrieval_scores(pairs["train"], pairs["val"], pairs["test"], ks=cfg.retrieval.ks,
                                       ridge_grid=cfg.retrieval.ridge_grid, groups=task.groups["test"])
        out.update({"n_test": int(r["n"]), "chance": round(r["chance_r1"], 4),
                    "within_video_chance": round(r["within_video_chance_r1"], 4)})
        for scorer, prefix in (("cosine", name), ("predictor", f"{name}_predictor"),
                               ("within_video_cosine", f"{name}_within_video")):
            for k in cfg.retrieval.ks:
                key = f"{scorer}_r{k}"
                if key not in r:
                    continue
                dest = prefix if k == 1 else f"{prefix}_r{k}"
                out.update({dest: round(r[key], 4), f"{dest}_ci_low": round(r[f"{key}_ci_low"], 4),
                            f"{dest}_ci_high": round(r[f"{key}_ci_high"], 4)})
    return out


def time_vector_scores(arrow: Task, feats: dict[str, ClipFeatures],
                       index: dict[ClipKey, int]) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The time vector of each model (mean forward minus mean reversed training clip): how often the
    sign of a test clip's projection gives its direction, and the projections for the histogram."""
    def rows(split: str, label: int) -> list[int]:
        return [index[k] for k, y in arrow.items[split] if y == label]

    out: dict = {}
    projections = {}
    for name, f in feats.items():
        tv = time_vector(f.vectors[rows("train", 1)], f.vectors[rows("train", 0)],
                         f.vectors[rows("test", 1)], f.vectors[rows("test", 0)])
        out.update({"n_test": tv.n, "chance": 0.5, name: round(tv.accuracy, 4), f"{name}_ci_low": round(tv.ci_low, 4),
                    f"{name}_ci_high": round(tv.ci_high, 4), f"{name}_separation": round(tv.separation, 4)})
        projections[name] = (tv.projections_fwd, tv.projections_rev)
    return out, projections


def real_arrow(store: ClipStore, models: list[FeatureModel], cache: FeatureCache, cfg: ProbeEvalConfig) -> dict:
    """Arrow of time on real footage, leave one group out. `<model>` is the score WITH the codec
    control (the honest one), `<model>_no_control` without it, beside per-direction scores and the
    share of clips the control made identical to their reverse (`_still`)."""
    r = cfg.real
    out: dict = {"chance": 0.5}
    for control, suffix in ((True, ""), (False, "_no_control")):
        folds = real_video.real_arrow_tasks(store, r.clips_per_video, control, val_fraction=r.val_fraction)
        feats = real_video.real_features(store, folds, models, cfg.batch_size, cache, r.control_sigma, r.control_tau)
        for name, table in feats.items():
            s = real_video.arrow_score(folds, table, cfg.l2_grid, cfg.epochs)
            out["n_test"] = s.n
            out.update({f"{name}{suffix}": round(s.accuracy, 4), f"{name}{suffix}_ci_low": round(s.ci_low, 4),
                        f"{name}{suffix}_ci_high": round(s.ci_high, 4),
                        f"{name}{suffix}_forward": round(s.forward_accuracy, 4),
                        f"{name}{suffix}_backward": round(s.backward_accuracy, 4),
                        f"{name}{suffix}_still": round(s.indistinguishable, 4)})
    return out
