"""The benchmark's scores: their files, their key scheme and the headline. Every module that names,
writes or reads a score goes through here.

`scores.json` (probe-eval's record) holds one dict per task. In it, `<model><probe>` is a score:
`<model>` alone is the primary one (linear-probe accuracy; cosine R@1 for retrieval; sign accuracy
for the time vector) and `<probe>` names another (`_knn`, `_attentive`, `_r5`, ...). Beside a score,
`_ci_low` / `_ci_high` bound its 95% interval (resampling test videos); `<a>_minus_<b>` is the paired
gap of two models; `supervised` is the ceiling; `n_test`, `n_test_videos` and `chance` (the mean of
the label-permutation null, `null_low`/`null_high` its 95% range) describe the test. Flattened with
the task in front (`arrow_of_time.video_knn`) a key is what the gate, the registry tags and the
MLflow metrics use. `temporal_score` is the headline task.

`metrics.json` (DVC metrics) is `headline()` of it: the headline with its interval, and per held-out
task the video model, the strongest baseline and the ceiling; a few dozen numbers.
"""
from __future__ import annotations

from typing import Any

SCORES = "scores.json"   # probe-eval's full record
REPORT = "report.md"
PLOTS = "plots"
# DVC plot data under PLOTS/, one file per task (dvc.yaml names these folders)
TASK_PLOTS, CONFUSION_PLOTS = "tasks", "confusion"
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
INTERVAL = (CI_LOW, CI_HIGH)
MINUS = "_minus_"
VIDEO, FRAMES, SUPERVISED = "video", "frames", "supervised"
ORDERED_FRAMES, RANDOM_INIT = "ordered_frames", "random_init"
HEADLINE = "temporal_score"
PER_CLASS = "per_class"  # metrics.json: classification task -> class -> {n, <model>: recall}
MODEL_LABELS = {VIDEO: "video model", FRAMES: "bag of frames", ORDERED_FRAMES: "ordered frames",
                RANDOM_INIT: "random init", "pixels": "raw pixels", "motion": "motion statistics"}
MODELS = list(MODEL_LABELS)  # the model, its bag-of-frames baseline, and the other baselines
BASELINES = MODELS[1:]
CHOSEN, STRONGEST = "_chosen", "_strongest"  # a model's probe chosen on validation; its best probe on test
VALIDATION = "_val"  # <model>_chosen_val: the validation accuracy its probe was chosen by (what tuning may read)
# a task scored by class with more classes than TOP_K also scores top-k accuracy: `<model><probe>_top5`
TOP_K = 5
TOP = f"_top{TOP_K}"
# Zero-shot readings of the video model's own objective, no probe: its pretext heads on the trained-on
# diagnostics; its predictor's surprise on the matched held-out tasks (objectives that predict)
HEADS, SURPRISE = "_heads", "_surprise"
# the surprise of a predictor that learned nothing, beside the objective's: the last seen frame held
HELD_FRAME = "held_frame"
# scores.json: the sha256 of the weights of each checkpoint scored (models.checkpoint.state_digest), by
# variant; register refuses to put these scores on any other weights
SCORED_WEIGHTS = "scored_weights"
STRONGEST_BASELINE = "strongest_baseline"    # metrics.json: the best baseline's best probe on a task


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def with_interval(name: str, value: float, low: float, high: float, decimals: int = 4) -> dict[str, float]:
    """{name: value, name_ci_low: low, name_ci_high: high}, rounded."""
    return {name: round(value, decimals), name + CI_LOW: round(low, decimals), name + CI_HIGH: round(high, decimals)}


def interval(scores: dict, name: str) -> tuple[float, float] | None:
    """The 95% interval recorded beside score `name`, or None."""
    lo, hi = scores.get(name + CI_LOW), scores.get(name + CI_HIGH)
    return (lo, hi) if _is_num(lo) and _is_num(hi) else None


def gap(a: str, b: str) -> str:
    """The paired gap's name: `gap("video_knn", "frames_knn")` -> `video_knn_minus_frames_knn`."""
    return f"{a}{MINUS}{b}"


def dotted(task: str, name: str) -> str:
    return f"{task}.{name}"


def split(key: str) -> tuple[str, str]:
    """`arrow_of_time.video_knn` -> ("arrow_of_time", "video_knn")."""
    task, _, name = key.partition(".")
    return task, name


def swap_model(name: str, model: str, other: str) -> str:
    """The same score of another model: `swap_model("video_r5", "video", "frames")` -> `frames_r5`."""
    if not name.startswith(model):
        raise ValueError(f"{name!r} is not a score of {model!r} ({model}[_probe])")
    return other + name[len(model):]


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """Nested scores -> {"arrow_of_time.video": 0.81, ...}: numeric leaves only (no bools)."""
    out: dict[str, float] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif _is_num(v):
            out[key] = float(v)
    return out


def lookup(tree: dict, key: str) -> Any:
    """`lookup(scores, "arrow_of_time.video")`; KeyError naming the first missing part."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(part)
        node = node[part]
    return node


def headline(record: dict, tasks: tuple[str, ...] | list[str], subject: str = VIDEO) -> dict[str, dict[str, float]]:
    """metrics.json: the headline with its interval, and per task of `tasks` (the held-out ones) the
    subject (the video model, or an external encoder evaluated alone; its probe chosen on validation),
    the strongest baseline (any baseline, any probe) and the supervised ceiling: a few dozen numbers that
    `dvc metrics diff` shows side by side, keyed by the subject's name."""
    out = {}
    for task, s in record.items():
        if not isinstance(s, dict) or "n_test_videos" not in s or (task != HEADLINE and task not in tasks):
            continue
        if task == HEADLINE:
            row = {subject: s[subject]} if _is_num(s.get(subject)) else {}
            if interval(s, subject):  # beside the score, where `dvc exp show`'s first columns show it
                row.update(zip((subject + CI_LOW, subject + CI_HIGH), interval(s, subject)))
            if _is_num(s.get(SUPERVISED)):
                row[SUPERVISED] = s[SUPERVISED]
        else:
            bars = [s[b + STRONGEST] for b in BASELINES if _is_num(s.get(b + STRONGEST))]
            row = {subject: s.get(subject + CHOSEN), subject + TOP: s.get(subject + CHOSEN + TOP),
                   STRONGEST_BASELINE: max(bars) if bars else None, SUPERVISED: s.get(SUPERVISED)}
            row = {k: v for k, v in row.items() if _is_num(v)}
        if row:
            out[task] = row
    return out
