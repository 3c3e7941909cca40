"""The benchmark's probes over one task's frozen features: every model x every probe, same splits, and
the scores with intervals that resample test videos.

Every probe (linear on the time-ordered vectors, attentive on the tokens, kNN) trains on training
videos, picks its hyperparameters on validation videos, and is scored once on test videos. Each
task is scored its own way (eval/tasks.py): accuracy per clip, or, for matched tasks, per comparison
of a set's possible members against the others by the probe's score. Every probe's per-unit outcomes
on the test videos are kept (`Outcomes`), so intervals, paired gaps between models and the headline
are computed on the same bootstrap draws of test videos (eval/stats.py).

Per model, two summaries beside each probe's score:
- `<model>_chosen`: the probe with the best validation accuracy (fair: chosen without test videos);
- `<model>_strongest`: the probe with the best test score. For a baseline this is the conservative
  reading (the bar a model has to clear is the best any probe got out of the baseline).
Results are flat dicts (`<model>` = the linear probe, `<model><suffix>` the others), the shape
metrics.json keeps. Several random initialisations of the network are scored as one model,
`random_init`: the mean of their per-unit outcomes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from videossl.config import ProbeEvalConfig
from videossl.eval import attentive, probes, real_video, scores
from videossl.eval.features import ClipFeatures, FeatureCache, FeatureModel
from videossl.eval.scores import CHOSEN, FRAMES, RANDOM_INIT, STRONGEST, SUPERVISED, TOP, TOP_K, VALIDATION, VIDEO
from videossl.eval.stats import Estimate, Null, VideoBootstrap, null_scores, percentile_interval
from videossl.eval.tasks import ACCURACY, MATCHED, PER_CLASS_SCORING, VIEWS, ClipKey, Task
from videossl.progress import Progress

VAL_EVERY = 4  # no validation videos (tiny datasets): every 4th training item validates instead
PRIMARY = ""   # the linear probe's suffix: the primary score keeps the model's bare name
PROBE_SUFFIX = {"linear": PRIMARY, "attentive": "_attentive", "knn": "_knn"}
# A matched comparison whose two means differ by less than this share of the scores' scale is a tie:
# order-free features of a spliced set are equal up to float rounding, and rounding must not decide.
TIE_TOLERANCE = 1e-4
# A ceiling closer than this to the strongest baseline cannot separate models: the headline divides by
# at least this much, so a task without headroom cannot blow it up.
MIN_CEILING_LEAD = 0.05


def held_out(n_train: int) -> np.ndarray:
    """Which training items validate when there are no validation videos (a boolean mask)."""
    return np.arange(n_train) % VAL_EVERY == VAL_EVERY - 1


@dataclass
class Rows:
    rows: np.ndarray    # feature rows
    labels: np.ndarray
    videos: np.ndarray  # each item's source video

    def take(self, keep: np.ndarray) -> "Rows":
        return Rows(self.rows[keep], self.labels[keep], self.videos[keep])


def splits_of(task: Task, index: dict[ClipKey, int]) -> dict[str, Rows]:
    out = {s: Rows(np.array([index[i.clip] for i in items], dtype=np.int64), task.labels(s),
                   np.array([i.clip.video for i in items], dtype=object)) for s, items in task.items.items()}
    if len(out["val"].labels) == 0:
        hold = held_out(len(out["train"].labels))
        out["train"], out["val"] = out["train"].take(~hold), out["train"].take(hold)
    return out


def unit_scores(task: Task, split: str, item_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores [units, classes], labels [units]) of a task scored by class: its items (ACCURACY), or its
    videos, each the mean of its views' scores (VIEWS)."""
    scores = np.asarray(item_scores, np.float64)
    if task.spec.scoring == VIEWS:
        groups = task.views(split)
        scores = np.stack([scores[rows].mean(0) for _, rows in groups]) if groups else scores[:0]
    return scores, unit_labels(task, split)


def unit_labels(task: Task, split: str = "test") -> np.ndarray:
    """Each unit's label: an item's (ACCURACY), or a video's, the label its views share (VIEWS)."""
    labels = task.labels(split)
    return labels if task.spec.scoring != VIEWS else np.array([labels[rows[0]] for _, rows in task.views(split)], np.int64)


def top_k(task: Task, split: str, item_scores: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Per unit, 1 when its label is among the k classes it scores highest (ties broken by class order)."""
    scores, labels = unit_scores(task, split, item_scores)
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (ranked == labels[:, None]).any(1).astype(np.float64)


def outcomes_of(task: Task, split: str, item_scores: np.ndarray) -> np.ndarray:
    """Per test unit, 1 right / 0 wrong (0.5 a tie): items' (ACCURACY) or videos' (VIEWS) predicted
    classes, or the comparisons of a matched task, from per-item scores [n, classes]."""
    if task.spec.scoring in PER_CLASS_SCORING:
        scores, labels = unit_scores(task, split, item_scores)
        return (scores.argmax(1) == labels).astype(np.float64)
    s = np.asarray(item_scores, np.float64)
    s = s[:, 1] - s[:, 0]  # how possible each item looks
    tol = TIE_TOLERANCE * (np.abs(s).mean() + 1e-12) if len(s) else 0.0
    out = []
    for c in task.comparisons[split]:
        d = s[list(c.better)].mean() - s[list(c.worse)].mean()
        out.append(0.5 if abs(d) <= tol else float(d > 0))
    return np.array(out, dtype=np.float64)


def unit_videos(task: Task, split: str = "test") -> list[str]:
    """The source video of each test unit (item, comparison or video): what the bootstrap resamples."""
    if task.spec.scoring == MATCHED:
        return [c.video for c in task.comparisons[split]]
    if task.spec.scoring == VIEWS:
        return [video for video, _ in task.views(split)]
    return [i.clip.video for i in task.items[split]]


def model_group(name: str) -> str:
    """The reported model a feature model belongs to: random_init_0, random_init_1 -> random_init."""
    return RANDOM_INIT if name.startswith(RANDOM_INIT + "_") else name


def reported(models: list[FeatureModel]) -> list[str]:
    """The models as the tables show them: the subject (the first model: videossl's video model, or the
    first external encoder when it is evaluated alone) first, then the baselines in scores.MODELS' order,
    then any other encoder; random-init seeds as one."""
    groups = list(dict.fromkeys(model_group(m.name) for m in models))
    return groups[:1] + [m for m in scores.MODELS if m in groups[1:]] + [m for m in groups[1:] if m not in scores.MODELS]


@dataclass
class Outcomes:
    """One task's test units and every (reported model, probe)'s per-unit outcome on them."""
    task: str
    classes: list[str]
    videos: list[str]                   # each test unit's source video
    labels: np.ndarray | None           # [n_units] units' labels (tasks scored by class)
    correct: dict[str, np.ndarray] = field(default_factory=dict)  # "<model><suffix>" -> [n_units] in [0, 1]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # model -> linear-probe predicted classes
    selected: dict[str, float] = field(default_factory=dict)  # "<model><suffix>_<hyperparameter>" -> value
    chosen: dict[str, str] = field(default_factory=dict)      # model -> the probe chosen on validation
    determinability: np.ndarray | None = None


def _average_seeds(per_model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Collapse random_init_<i><suffix> into random_init<suffix> (mean over seeds)."""
    out: dict[str, list[np.ndarray]] = {}
    for key, value in per_model.items():
        name = key
        if key.startswith(RANDOM_INIT + "_"):
            rest = key[len(RANDOM_INIT) + 1:]
            name = RANDOM_INIT + (rest[rest.index("_"):] if "_" in rest else "")
        out.setdefault(name, []).append(value)
    return {k: np.mean(np.stack(v), axis=0) for k, v in out.items()}


def _probe_model(task: Task, name: str, f: ClipFeatures, sp: dict[str, Rows], cfg: ProbeEvalConfig,
                 seed: int) -> tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, float], str]:
    """One feature model on one task, every probe: ({"<name><suffix>": per-unit test outcome}, linear
    predictions, {"<name><suffix>_<hyperparameter>": value chosen on validation}, the probe chosen on
    validation; its outcomes are also under "<name>_chosen")."""
    n_classes = len(task.classes)
    vec = lambda s: (f.vectors[sp[s].rows], sp[s].labels)  # noqa: E731
    tok = lambda s: (f.tokens[sp[s].rows], sp[s].labels)  # noqa: E731
    correct, selected, predictions, val = {}, {}, None, {}
    for probe in cfg.probes:
        suffix = PROBE_SUFFIX[probe]
        if probe == "linear":
            s = probes.linear_probe(vec("train"), vec("val"), vec("test"), n_classes, cfg.l2_grid, cfg.epochs)
        elif probe == "attentive":
            s = attentive.attentive_probe(tok("train"), tok("val"), tok("test"), n_classes, cfg.attentive, seed=seed)
        else:
            s = probes.knn_probe(vec("train"), vec("val"), vec("test"), n_classes, cfg.knn)
        correct[name + suffix] = outcomes_of(task, "test", s.scores)
        if task.spec.scoring in PER_CLASS_SCORING and n_classes > TOP_K:
            correct[name + suffix + TOP] = top_k(task, "test", s.scores)
        if probe == "linear" and task.spec.scoring in PER_CLASS_SCORING:
            predictions = unit_scores(task, "test", s.scores)[0].argmax(1)
        val[probe] = -1.0 if s.val_accuracy is None else s.val_accuracy
        selected.update({f"{name}{suffix}_{k}": v for k, v in s.selected.items()})
    chosen = max(cfg.probes, key=lambda p: val[p])  # ties keep the earlier probe in probe_eval.probes
    selected[name + CHOSEN + VALIDATION] = round(val[chosen], 4)  # what the study's tuning chooses settings by
    for extra in ("", TOP):
        if name + PROBE_SUFFIX[chosen] + extra in correct:
            correct[name + CHOSEN + extra] = correct[name + PROBE_SUFFIX[chosen] + extra]
    return correct, predictions, selected, chosen


def _outcomes(task: Task, per_model: list[tuple[str, tuple]]) -> Outcomes:
    """Assemble one task's Outcomes from its models' `_probe_model` results (random-init seeds averaged)."""
    determ = np.array([i.determinability for i in task.items["test"]])
    out = Outcomes(task.name, task.classes, unit_videos(task), unit_labels(task) if task.spec.scoring in PER_CLASS_SCORING else None,
                   determinability=determ if task.spec.scoring == ACCURACY and np.isfinite(determ).any() else None)
    correct: dict[str, np.ndarray] = {}
    for name, (c, predictions, selected, chosen) in per_model:
        correct.update(c)
        if model_group(name) == name:
            out.selected.update(selected)
            out.chosen[name] = chosen
            if predictions is not None:
                out.predictions[name] = predictions
    out.correct = _average_seeds(correct)
    return out


def classify(task: Task, feats: dict[str, ClipFeatures], index: dict[ClipKey, int], cfg: ProbeEvalConfig,
             seed: int) -> Outcomes:
    """Every model and probe on one task."""
    sp = splits_of(task, index)
    return _outcomes(task, [(name, _probe_model(task, name, f, sp, cfg, seed)) for name, f in feats.items()])


def _mapped(root, name: str) -> ClipFeatures:
    return ClipFeatures(np.load(root / f"{name}.vectors.npy", mmap_mode="r"),
                        np.load(root / f"{name}.tokens.npy", mmap_mode="r"))


def _job(job: tuple):
    """One unit of classify_all in a worker: a (task, model) probe run, a task's null, or one model's
    real-footage arrow of time (`task` is then its folds, `root` its features)."""
    kind, task, name, root, index, cfg, seed = job
    if kind == "null":  # on the subject's features
        return null_of(task, _mapped(root, name), index, cfg.null_permutations, seed)
    if kind == "real":
        return real_video.arrow_score(task, root, cfg.l2_grid, cfg.epochs)
    return _probe_model(task, name, _mapped(root, name), splits_of(task, index), cfg, seed)


def classify_all(tasks: list[Task], feats: dict[str, ClipFeatures], index: dict[ClipKey, int],
                 cfg: ProbeEvalConfig, seed: int, workers: int, real: RealArrowInputs | None = None,
                 subject: str = VIDEO) -> tuple[dict[str, tuple[Outcomes, Null]], dict]:
    """`classify` and `null_of` (on the subject's features) of every task, one job per (task, model),
    and with `real` the real-footage probes (`real_arrow_scores`), in `workers` processes. Each probe runs on one thread
    (probes.single_thread), so processes are what uses the other cores; the results are the same as in
    one process (every probe is seeded). The workers are spawned, not forked (a fork of a process whose
    OpenMP pool has run hangs in the child), and read the features memory-mapped from .npy files
    instead of receiving hundreds of MB through a pipe. Returns the tasks' results and the real-footage
    scores by (codec control, model)."""
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    if workers <= 1:
        out = {}
        for t in Progress(tasks, desc="probes", unit="tasks"):
            out[t.name] = (classify(t, feats, index, cfg, seed), null_of(t, feats[subject], index, cfg.null_permutations, seed))
        return out, real_arrow_scores(real, cfg) if real else {}
    with tempfile.TemporaryDirectory(prefix="videossl-probes-") as tmp:
        root = Path(tmp)
        for name, f in feats.items():
            np.save(root / f"{name}.vectors.npy", f.vectors)
            np.save(root / f"{name}.tokens.npy", f.tokens)
        jobs = [("probe", t, name, root, index, cfg, seed) for t in tasks for name in feats]
        jobs += [("null", t, subject, root, index, cfg, seed) for t in tasks]
        # the biggest tasks first, so the last job to finish is a small one
        jobs.sort(key=lambda j: -len(j[1].items["train"]) * len(j[1].classes))
        # the real-footage probes (small) last: they fill the gaps the big jobs leave
        jobs += [("real", real.folds[control], (control, name), table, None, cfg, seed)
                 for control, _ in CONTROLS for name, table in (real.feats[control].items() if real else ())]
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(Progress(pool.map(_job, jobs), total=len(jobs), desc="probes (task x model, nulls)",
                                    unit="jobs"))
    done = {(j[0], j[1].name, j[2] if j[0] == "probe" else None): r for j, r in zip(jobs, results) if j[0] != "real"}
    arrows = {j[2]: r for j, r in zip(jobs, results) if j[0] == "real"}
    return ({t.name: (_outcomes(t, [(name, done[("probe", t.name, name)]) for name in feats]), done[("null", t.name, None)])
             for t in tasks}, arrows)


def null_of(task: Task, feats: ClipFeatures, index: dict[ClipKey, int], permutations: int, seed: int) -> Null:
    """The task's null on one model's features: its score when training labels are permuted by video
    (see stats.null_scores), scored the task's own way."""
    sp = splits_of(task, index)
    fit = [sp["train"], sp["val"]]
    s = null_scores(feats.vectors[np.concatenate([r.rows for r in fit])], np.concatenate([r.labels for r in fit]),
                    np.concatenate([r.videos for r in fit]).tolist(), feats.vectors[sp["test"].rows],
                    len(task.classes), permutations, seed)
    return Null.of(np.array([outcomes_of(task, "test", s[:, p]).mean() for p in range(s.shape[1])]))


def strongest(out: Outcomes, model: str) -> tuple[str, np.ndarray] | None:
    """(suffix, outcomes) of the model's best probe on the test units (its conservative reading)."""
    options = [(sfx, out.correct[model + sfx]) for sfx in PROBE_SUFFIX.values() if model + sfx in out.correct]
    return max(options, key=lambda o: o[1].mean()) if options else None


def score(out: Outcomes, boot: VideoBootstrap, null: Null | None, others: list[str], supervised: np.ndarray | None,
          determinable: float | None, subject: str = VIDEO) -> dict:
    """metrics.json's dict of one task: every model's score with its interval, each model's chosen and
    strongest probe, the subject's (the video model's) paired gap to each other model's strongest probe,
    n, the null (chance), the ceiling."""
    res: dict = {"n_test": len(out.videos), "n_test_videos": len(set(out.videos))}
    if null is not None:
        res.update({"chance": round(null.mean, 4), "null_low": round(null.low, 4), "null_high": round(null.high, 4)})
    else:
        res["chance"] = round(1.0 / len(out.classes), 4)
    models = sorted({m for m in [subject] + others} | {model_group(k.split(CHOSEN)[0]) for k in out.correct if k.endswith(CHOSEN)})
    for m in models:
        best = strongest(out, m)
        if best is not None:
            out.correct[m + STRONGEST] = best[1]
            res[f"{m}{STRONGEST}_probe"] = best[0].lstrip("_") or "linear"
    for key, values in out.correct.items():
        res.update(boot.estimate(values, out.videos).keys(key))
    if supervised is not None:
        res.update(boot.estimate(supervised, out.videos).keys(SUPERVISED))
    for b in others:
        if b + STRONGEST in out.correct and subject + CHOSEN in out.correct:
            paired = boot.gap(out.correct[subject + CHOSEN], out.correct[b + STRONGEST], out.videos)
            res.update(paired.keys(scores.gap(subject + CHOSEN, b + STRONGEST)))
    if determinable is not None and out.determinability is not None:
        keep = out.determinability >= determinable
        res["n_test_determinable"] = int(keep.sum())
        videos = [v for v, k in zip(out.videos, keep) if k]
        for key, values in out.correct.items():
            if key.endswith(CHOSEN) or key in models:
                res.update(boot.estimate(values[keep], videos).keys(f"{key}_determinable"))
    res.update({k: v for k, v in out.selected.items() if isinstance(v, (int, float))})
    res.update({f"{m}{CHOSEN}_probe": p for m, p in out.chosen.items()})
    return res


def temporal_score(outcomes: dict[str, Outcomes], supervised: dict[str, np.ndarray], boot: VideoBootstrap,
                   models: list[str], baselines: list[str], tasks: list[str], subject: str = VIDEO) -> dict:
    """The headline: per model, the mean over the held-out tasks of (model - strongest baseline) /
    max(ceiling - strongest baseline, MIN_CEILING_LEAD). Each model is read with its probe chosen on
    validation; the strongest baseline is the best (baseline, probe) on each task's test units, so 0 is
    the best any baseline reached with any probe and 1 the supervised ceiling (a baseline's own score is
    at most 0). Intervals, and the subject's (the video model's) paired gap to the bag of frames, come
    from the same bootstrap draws for every task and model; per task, the subject's share."""
    used = [t for t in tasks if t in outcomes and t in supervised]
    if not used:
        return {}
    bars = {}
    for t in used:
        options = [(b + sfx, outcomes[t].correct[b + sfx]) for b in baselines for sfx in PROBE_SUFFIX.values()
                   if b + sfx in outcomes[t].correct]
        bars[t] = max(options, key=lambda o: o[1].mean())
    res: dict = {"n_test_videos": len(set(v for t in used for v in outcomes[t].videos)), "tasks": ",".join(used),
                 "baselines": ",".join(f"{t}={bars[t][0]}" for t in used), SUPERVISED: 1.0}
    reps: dict[str, np.ndarray] = {}
    for model in models:
        if not all(model + CHOSEN in outcomes[t].correct for t in used):
            continue
        points, per_task = [], []
        for t in used:
            o = outcomes[t]
            m, b, c = o.correct[model + CHOSEN], bars[t][1], supervised[t]
            rb = boot.replicates(b, o.videos)
            points.append((m.mean() - b.mean()) / max(c.mean() - b.mean(), MIN_CEILING_LEAD))
            per_task.append((boot.replicates(m, o.videos) - rb)
                            / np.maximum(boot.replicates(c, o.videos) - rb, MIN_CEILING_LEAD))
            if model == subject:
                res[t] = round(float(points[-1]), 4)
        reps[model] = np.mean(np.stack(per_task), axis=0)
        res.update(Estimate(float(np.mean(points)), *percentile_interval(reps[model])).keys(model))
    if subject in reps and FRAMES in reps:
        diff = reps[subject] - reps[FRAMES]
        res.update(Estimate(res[subject] - res[FRAMES], *percentile_interval(diff)).keys(scores.gap(subject, FRAMES)))
    return res


@dataclass
class RealArrowInputs:
    """Real-footage arrow of time, per codec-control setting: its leave-one-group-out folds and every
    model's features of their clips (eval/real_video.py), ready for the probes."""
    folds: dict[bool, list]     # control -> folds
    feats: dict[bool, dict]     # control -> {model: {clip: vector}}


CONTROLS = ((True, ""), (False, "_no_control"))  # with the codec control (the honest score) and without


def real_arrow_inputs(store, models: list[FeatureModel], cache: FeatureCache, cfg: ProbeEvalConfig) -> RealArrowInputs:
    r = cfg.real
    folds = {control: real_video.real_arrow_tasks(store, r.clips_per_video, control, r.val_fraction)
             for control, _ in CONTROLS}
    return RealArrowInputs(folds, {control: real_video.real_features(store, folds[control], models, cfg.batch_size,
                                                                     cache, r.control_sigma, r.control_tau)
                                   for control, _ in CONTROLS})


def real_arrow_scores(real: RealArrowInputs, cfg: ProbeEvalConfig) -> dict[tuple[bool, str], "real_video.ArrowScore"]:
    return {(control, name): real_video.arrow_score(real.folds[control], table, cfg.l2_grid, cfg.epochs)
            for control, _ in CONTROLS for name, table in real.feats[control].items()}


def real_arrow(real: RealArrowInputs, arrows: dict[tuple[bool, str], "real_video.ArrowScore"], cfg: ProbeEvalConfig,
               seed: int) -> dict:
    """Arrow of time on real footage, leave one group out, from each model's probe scores (`arrows`, by
    codec control and model). `<model>` is the score WITH the codec control (the honest one),
    `<model>_no_control` without it, beside per-direction scores and the share of clips the control made
    identical to their reverse (`_still`). Intervals resample the real videos; `videos_right` counts
    the held-out videos a model got mostly right."""
    out: dict = {"chance": 0.5}
    groups: dict[str, dict] = {}  # per footage group (the held-out fold), with the codec control
    for control, suffix in CONTROLS:
        credit: dict[str, list[np.ndarray]] = {}
        for name in real.feats[control]:
            s = arrows[(control, name)]
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
            mean = np.mean(np.stack(values), axis=0)
            out.update(boot.estimate(mean, s.videos).keys(name + suffix))
            if not suffix:  # per video: right on more than half of its clips
                per_video = {v: [] for v in s.videos}
                for v, x in zip(s.videos, mean):
                    per_video[v].append(x)
                out[f"{name}_videos_right"] = int(sum(np.mean(x) > 0.5 for x in per_video.values()))
    out["groups"] = dict(sorted(groups.items()))
    return out


def real_footage(store, fps: float) -> list[dict]:
    """The real videos a real-footage score used: source, footage group, frames and seconds."""
    return [{"video": v.source_id, "group": v.group or v.source_id, "frames": v.frames,
             "seconds": round(v.frames / fps, 2)} for v in sorted(store.videos_in(kind="real"),
                                                                  key=lambda v: v.source_id)]
