"""The benchmark's probes over one task's frozen features: every model x every probe, same splits,
and the scores with intervals that resample test videos.

Classification tasks: linear on the time-ordered vectors (primary), linear on the layout-keeping
grid tokens (`_grid`), attentive and kNN probes, each trained on training videos, tuned on
validation videos and scored once on test videos. Retrieval: R@1/R@5 of the future clip by cosine
similarity and through a learned linear predictor. Every probe's per-clip outcomes on the test
items are kept (`Outcomes`), so intervals, paired gaps between models and the headline score can be
computed on the same bootstrap draws of test videos (eval/stats.py).

Results are flat dicts (`<model>` = the primary score, `<model>_<probe>` the others), the shape
metrics.json keeps. Several random initialisations of the network are scored as one model,
`random_init`: the mean of their per-clip outcomes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from videossl.config import ProbeEvalConfig
from videossl.data.shards import ClipStore
from videossl.eval import attentive, probes, real_video, retrieval, scores
from videossl.eval.scores import FRAMES, SUPERVISED, VIDEO
from videossl.progress import Progress
from videossl.eval.features import ClipFeatures, FeatureCache, FeatureModel
from videossl.eval.stats import Null, VideoBootstrap, null_accuracies
from videossl.eval.tasks import ClipKey, RetrievalTask, Task
from videossl.eval.time_vector import time_vector

VAL_EVERY = 4  # no validation videos (tiny datasets): every 4th training item validates instead
PRIMARY = ""   # the primary probe's suffix: linear on the time-ordered vectors
PROBE_SUFFIX = {"linear": PRIMARY, "linear_grid": "_grid", "attentive": "_attentive", "knn": "_knn"}
RANDOM_INIT = "random_init"
# A ceiling closer than this to the bag of frames cannot separate models: temporal_score divides by at
# least this much, so a task without a real ceiling cannot blow the headline up.
MIN_CEILING_LEAD = 0.05


def held_out(n_train: int) -> np.ndarray:
    """Which training items validate when there are no validation videos (a boolean mask)."""
    return np.arange(n_train) % VAL_EVERY == VAL_EVERY - 1


@dataclass
class Rows:
    rows: np.ndarray    # feature rows
    labels: np.ndarray


def splits_of(task: Task, index: dict[ClipKey, int]) -> dict[str, Rows]:
    out = {s: Rows(np.array([index[k] for k, _ in items], dtype=np.int64),
                   np.array([y for _, y in items], dtype=np.int64)) for s, items in task.items.items()}
    if len(out["val"].labels) == 0:
        hold = held_out(len(out["train"].labels))
        tr = out["train"]
        out["train"], out["val"] = Rows(tr.rows[~hold], tr.labels[~hold]), Rows(tr.rows[hold], tr.labels[hold])
    return out


def model_group(name: str) -> str:
    """The reported model a feature model belongs to: random_init_0, random_init_1 -> random_init."""
    return RANDOM_INIT if name.startswith(RANDOM_INIT + "_") else name


@dataclass
class Outcomes:
    """One task's test items and every (reported model, probe suffix)'s per-item score on them."""
    task: str
    classes: list[str]
    videos: list[str]                  # the test items' source videos
    labels: np.ndarray                 # [n_test]
    correct: dict[str, np.ndarray] = field(default_factory=dict)  # "<model><suffix>" -> [n_test] in [0, 1]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # model -> primary-probe predictions
    selected: dict[str, float] = field(default_factory=dict)  # "<model><suffix>_<hyperparameter>" -> value
    determinability: np.ndarray | None = None  # [n_test] (arrow of time), see Task.determinability


def _average_seeds(per_model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Collapse random_init_<i><suffix> into random_init<suffix> (mean over seeds)."""
    out: dict[str, list[np.ndarray]] = {}
    for key, value in per_model.items():
        name = key
        if key.startswith(RANDOM_INIT + "_"):
            rest = key[len(RANDOM_INIT) + 1:]
            suffix = rest[rest.index("_"):] if "_" in rest else ""
            name = RANDOM_INIT + suffix
        out.setdefault(name, []).append(value)
    return {k: np.mean(np.stack(v), axis=0) for k, v in out.items()}


def _probe_model(task: Task, name: str, f: ClipFeatures, sp: dict[str, Rows], cfg: ProbeEvalConfig,
                 seed: int) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, float]]:
    """One feature model on one task, every probe: ({"<name><suffix>": per-item test outcome}, primary
    predictions, {"<name><suffix>_<hyperparameter>": value chosen on validation})."""
    n_classes = len(task.classes)
    vec = lambda s: (f.vectors[sp[s].rows], sp[s].labels)  # noqa: E731
    tok = lambda s: (f.tokens[sp[s].rows], sp[s].labels)  # noqa: E731
    grid = lambda s: (probes.flatten_clips(f.tokens[sp[s].rows]), sp[s].labels)  # noqa: E731
    correct, selected, predictions = {}, {}, None
    for probe in cfg.probes:
        suffix = PROBE_SUFFIX[probe]
        if probe == "linear":
            s = probes.linear_probe(vec("train"), vec("val"), vec("test"), n_classes, cfg.l2_grid, cfg.epochs)
            predictions = s.predictions
        elif probe == "linear_grid":
            s = probes.linear_probe(grid("train"), grid("val"), grid("test"), n_classes, cfg.l2_grid, cfg.epochs)
        elif probe == "attentive":
            s = attentive.attentive_probe(tok("train"), tok("val"), tok("test"), n_classes, cfg.attentive, seed=seed)
        else:
            s = probes.knn_probe(vec("train"), vec("val"), vec("test"), n_classes, cfg.knn)
        correct[name + suffix] = (s.predictions == sp["test"].labels).astype(np.float64)
        selected.update({f"{name}{suffix}_{k}": v for k, v in s.selected.items()})
    return correct, predictions, selected


def _outcomes(task: Task, sp: dict[str, Rows], per_model: list[tuple[str, tuple]]) -> Outcomes:
    """Assemble one task's Outcomes from its models' `_probe_model` results (random-init seeds averaged)."""
    test_keys = [k for k, _ in task.items["test"]]
    out = Outcomes(task.name, task.classes, [k.video for k in test_keys], sp["test"].labels,
                   determinability=np.array(task.determinability["test"]) if task.determinability else None)
    correct: dict[str, np.ndarray] = {}
    for name, (c, predictions, selected) in per_model:
        correct.update(c)
        out.selected.update(selected)
        if predictions is not None and model_group(name) == name:
            out.predictions[name] = predictions
    out.correct = _average_seeds(correct)
    return out


def classify(task: Task, feats: dict[str, ClipFeatures], index: dict[ClipKey, int], cfg: ProbeEvalConfig,
             seed: int) -> Outcomes:
    """Every model and probe on one task: per-item test outcomes, primary predictions (confusion)."""
    sp = splits_of(task, index)
    return _outcomes(task, sp, [(name, _probe_model(task, name, f, sp, cfg, seed)) for name, f in feats.items()])


def _mapped(root, name: str) -> ClipFeatures:
    return ClipFeatures(np.load(root / f"{name}.vectors.npy", mmap_mode="r"),
                        np.load(root / f"{name}.tokens.npy", mmap_mode="r"))


def _job(job: tuple):
    """One unit of classify_all in a worker: a (task, model) probe run, or a task's null."""
    kind, task, name, root, index, cfg, seed = job
    if kind == "null":
        return null_of(task, _mapped(root, "video"), index, cfg.null_permutations, seed)
    return _probe_model(task, name, _mapped(root, name), splits_of(task, index), cfg, seed)


def classify_all(tasks: list[Task], feats: dict[str, ClipFeatures], index: dict[ClipKey, int],
                 cfg: ProbeEvalConfig, seed: int, workers: int) -> dict[str, tuple[Outcomes, Null]]:
    """`classify` and `null_of` of every task, one job per (task, model), in `workers` processes. Each
    probe runs on one thread (probes.single_thread), so processes are what uses the other cores; the
    results are the same as in one process (every probe is seeded). The workers are spawned, not
    forked (a fork of a process whose OpenMP pool has run hangs in the child), and read the features
    memory-mapped from .npy files instead of receiving hundreds of MB through a pipe."""
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    if workers <= 1:
        out = {}
        for t in Progress(tasks, desc="probes", unit="tasks"):
            out[t.name] = (classify(t, feats, index, cfg, seed), null_of(t, feats["video"], index,
                                                                       cfg.null_permutations, seed))
        return out
    with tempfile.TemporaryDirectory(prefix="videossl-probes-") as tmp:
        root = Path(tmp)
        for name, f in feats.items():
            np.save(root / f"{name}.vectors.npy", f.vectors)
            np.save(root / f"{name}.tokens.npy", f.tokens)
        jobs = [("probe", t, name, root, index, cfg, seed) for t in tasks for name in feats]
        jobs += [("null", t, None, root, index, cfg, seed) for t in tasks]
        # the biggest tasks first, so the last job to finish is a small one
        jobs.sort(key=lambda j: -len(j[1].items["train"]) * len(j[1].classes))
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(Progress(pool.map(_job, jobs), total=len(jobs), desc="probes (task x model, nulls)",
                                    unit="jobs"))
    done = dict(zip([(j[0], j[1].name, j[2]) for j in jobs], results))
    out = {}
    for t in tasks:
        sp = splits_of(t, index)
        out[t.name] = (_outcomes(t, sp, [(name, done[("probe", t.name, name)]) for name in feats]),
                       done[("null", t.name, None)])
    return out


def null_of(task: Task, feats: ClipFeatures, index: dict[ClipKey, int], permutations: int, seed: int) -> Null:
    """The task's label-permutation null on one model's features (see stats.null_accuracies)."""
    sp = splits_of(task, index)
    train_rows = np.concatenate([sp["train"].rows, sp["val"].rows])
    train_y = np.concatenate([sp["train"].labels, sp["val"].labels])
    acc = null_accuracies(feats.vectors[train_rows], train_y, feats.vectors[sp["test"].rows], sp["test"].labels,
                          len(task.classes), permutations, seed)
    return Null.of(acc)


def score(out: Outcomes, boot: VideoBootstrap, null: Null | None, baselines: list[str], supervised: np.ndarray | None,
          determinable: float | None) -> dict:
    """metrics.json's dict of one classification task: every model's score with its interval, the
    video model's paired gap to each baseline, n, the null (chance), the ceiling."""
    res: dict = {"n_test": len(out.labels), "n_test_videos": len(set(out.videos))}
    if null is not None:
        res.update({"chance": round(null.mean, 4), "null_low": round(null.low, 4), "null_high": round(null.high, 4)})
    else:
        res["chance"] = round(1.0 / len(out.classes), 4)
    for key, values in out.correct.items():
        res.update(boot.estimate(values, out.videos).keys(key))
    if supervised is not None:
        res.update(boot.estimate(supervised, out.videos).keys(SUPERVISED))
    for suffix in sorted({k[len("video"):] for k in out.correct if k.startswith("video")}):
        against = baselines if suffix == PRIMARY else ["frames"]
        for b in against:
            if b + suffix in out.correct:
                paired = boot.gap(out.correct[VIDEO + suffix], out.correct[b + suffix], out.videos)
                res.update(paired.keys(scores.gap(VIDEO + suffix, b + suffix)))
    if determinable is not None and out.determinability is not None:
        keep = out.determinability >= determinable
        res["n_test_determinable"] = int(keep.sum())
        videos = [v for v, k in zip(out.videos, keep) if k]
        for key, values in out.correct.items():
            if not any(key.endswith(sfx) for sfx in PROBE_SUFFIX.values() if sfx):  # primary probe only
                res.update(boot.estimate(values[keep], videos).keys(f"{key}_determinable"))
        if supervised is not None:
            res.update(boot.estimate(supervised[keep], videos).keys("supervised_determinable"))
    res.update({k: v for k, v in out.selected.items() if isinstance(v, (int, float))
                and not k.startswith(RANDOM_INIT + "_")})
    return res


def temporal_score(outcomes: dict[str, Outcomes], supervised: dict[str, np.ndarray], boot: VideoBootstrap,
                   models: list[str], tasks: list[str]) -> dict:
    """The headline: per model, the mean over the temporal tasks of (model - bag of frames) /
    max(ceiling - bag of frames, MIN_CEILING_LEAD), with its interval from the same bootstrap draws for every task (paired:
    model, bag of frames and ceiling are scored on the same resampled videos). 0 = the bag of frames,
    1 = the supervised ceiling."""
    used = [t for t in tasks if t in outcomes and t in supervised]
    if not used:
        return {}

    def per_task(model: str) -> tuple[list[float], list[np.ndarray]]:
        points, reps = [], []
        for t in used:
            o = outcomes[t]
            m, f, c = o.correct[model], o.correct["frames"], supervised[t]
            rf = boot.replicates(f, o.videos)
            points.append((m.mean() - f.mean()) / max(c.mean() - f.mean(), MIN_CEILING_LEAD))
            reps.append((boot.replicates(m, o.videos) - rf)
                        / np.maximum(boot.replicates(c, o.videos) - rf, MIN_CEILING_LEAD))
        return points, reps

    from videossl.eval.stats import Estimate, percentile_interval

    res: dict = {"n_test_videos": len(set(v for t in used for v in outcomes[t].videos)), "tasks": ",".join(used),
                 FRAMES: 0.0, SUPERVISED: 1.0}
    for model in models:
        if model == "frames" or not all(model in outcomes[t].correct for t in used):
            continue
        points, reps = per_task(model)
        est = Estimate(float(np.mean(points)), *percentile_interval(np.mean(np.stack(reps), axis=0)))
        res.update(est.keys(model))
        if model == "video":
            res.update(est.keys(scores.gap(VIDEO, FRAMES)))  # the bag of frames is 0 by definition
    return res


def retrieve(task: RetrievalTask, feats: dict[str, ClipFeatures], index: dict[ClipKey, int],
             cfg: ProbeEvalConfig, boot: VideoBootstrap) -> dict:
    """R@k of each model: `<model>` = cosine R@1 (the primary score), `<model>_r5`, `<model>_predictor`
    (R@1 through the learned predictor), `<model>_predictor_r5`, `<model>_within_video` (R@1 among the
    same video's futures only), each with its interval over test videos."""
    out: dict = {}
    hits: dict[str, list[np.ndarray]] = {}
    videos = task.groups["test"]
    for name, f in feats.items():
        pairs = {s: (f.vectors[[index[q] for q, _ in task.pairs[s]]], f.vectors[[index[t] for _, t in task.pairs[s]]])
                 for s in task.pairs}
        if not len(pairs["val"][0]):  # no validation videos: every 4th training pair validates instead
            hold = held_out(len(pairs["train"][0]))
            pairs["val"] = tuple(a[hold] for a in pairs["train"])
            pairs["train"] = tuple(a[~hold] for a in pairs["train"])
        r = retrieval.retrieval_scores(pairs["train"], pairs["val"], pairs["test"], ks=cfg.retrieval.ks,
                                       ridge_grid=cfg.retrieval.ridge_grid, groups=videos)
        group = model_group(name)
        out.update({"n_test": int(r["n"]), "n_test_videos": len(set(videos)),
                    "within_video_chance": round(r["within_video_chance_r1"], 4)})
        out.update({("chance" if k == 1 else f"chance_r{k}"): round(r[f"chance_r{k}"], 4) for k in cfg.retrieval.ks})
        for scorer, suffix in (("cosine", ""), ("predictor", "_predictor")):
            for k in cfg.retrieval.ks:
                dest = f"{group}{suffix}" if k == 1 else f"{group}{suffix}_r{k}"
                hits.setdefault(dest, []).append((r["ranks"][scorer] < k).astype(np.float64))
        hits.setdefault(f"{group}_within_video", []).append(r["within_video_hits"]["cosine"])
    keep = np.array(r.get("within_video_keep", np.ones(len(videos), bool)))
    for key, values in hits.items():
        mean = np.mean(np.stack(values), axis=0)
        item_videos = [v for v, k in zip(videos, keep) if k] if key.endswith("_within_video") else videos
        out.update(boot.estimate(mean, item_videos).keys(key))
    return out


def time_vector_scores(arrow: Task, feats: dict[str, ClipFeatures], index: dict[ClipKey, int],
                       boot: VideoBootstrap) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The time vector of each model (mean forward minus mean reversed training clip): how often the
    sign of a test clip's projection gives its direction, and the projections for the histogram."""
    def items(split: str, label: int) -> list[ClipKey]:
        return [k for k, y in arrow.items[split] if y == label]

    fwd_keys, rev_keys = items("test", 1), items("test", 0)
    videos = [k.video for k in fwd_keys] + [k.video for k in rev_keys]
    out: dict = {"n_test": len(videos), "n_test_videos": len(set(videos)), "chance": 0.5}
    projections, credit, separation = {}, {}, {}
    for name, f in feats.items():
        rows = lambda keys: f.vectors[[index[k] for k in keys]]  # noqa: E731
        tv = time_vector(rows(items("train", 1)), rows(items("train", 0)), rows(fwd_keys), rows(rev_keys))
        p_f, p_r = tv.projections_fwd, tv.projections_rev
        got = np.concatenate([(p_f > 0) + 0.5 * (p_f == 0), (p_r < 0) + 0.5 * (p_r == 0)]).astype(np.float64)
        credit.setdefault(model_group(name), []).append(got)
        separation.setdefault(model_group(name), []).append(tv.separation)
        if model_group(name) == name:
            projections[name] = (p_f, p_r)
    for name, values in credit.items():
        out.update(boot.estimate(np.mean(np.stack(values), axis=0), videos).keys(name))
        out[f"{name}_separation"] = round(float(np.mean(separation[name])), 4)
    return out, projections


def real_arrow(store: ClipStore, models: list[FeatureModel], cache: FeatureCache, cfg: ProbeEvalConfig,
               seed: int) -> dict:
    """Arrow of time on real footage, leave one group out. `<model>` is the score WITH the codec
    control (the honest one), `<model>_no_control` without it, beside per-direction scores and the
    share of clips the control made identical to their reverse (`_still`). Intervals resample the
    real videos."""
    r = cfg.real
    out: dict = {"chance": 0.5}
    groups: dict[str, dict] = {}  # per footage group (the held-out fold), with the codec control
    for control, suffix in ((True, ""), (False, "_no_control")):
        folds = real_video.real_arrow_tasks(store, r.clips_per_video, control, r.val_fraction)
        feats = real_video.real_features(store, folds, models, cfg.batch_size, cache, r.control_sigma, r.control_tau)
        credit: dict[str, list[np.ndarray]] = {}
        for name, table in feats.items():
            s = real_video.arrow_score(folds, table, cfg.l2_grid, cfg.epochs)
            group = model_group(name)
            credit.setdefault(group, []).append(s.credit)
            if group == name:
                out.update({f"{name}{suffix}_forward": round(s.forward_accuracy, 4),
                            f"{name}{suffix}_backward": round(s.backward_accuracy, 4),
                            f"{name}{suffix}_still": round(s.indistinguishable, 4)})
                if control:
                    for g, acc in s.fold_accuracy.items():
                        groups.setdefault(g, {"n_test": s.fold_n[g]})[name] = round(acc, 4)
        boot = VideoBootstrap(s.videos, cfg.bootstrap, seed)
        out.update({"n_test": len(s.videos), "n_test_videos": len(set(s.videos))})
        for name, values in credit.items():
            out.update(boot.estimate(np.mean(np.stack(values), axis=0), s.videos).keys(name + suffix))
    out["groups"] = dict(sorted(groups.items()))
    return out


def real_footage(store: ClipStore, fps: float) -> list[dict]:
    """The real videos a real-footage score used: source, footage group, frames and seconds."""
    return [{"video": v.source_id, "group": v.group or v.source_id, "frames": v.frames,
             "seconds": round(v.frames / fps, 2)} for v in sorted(store.videos_in(kind="real"),
                                                                  key=lambda v: v.source_id)]
