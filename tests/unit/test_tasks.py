"""The task registry is the one place the task list lives, and matched tasks are scored by comparison."""
from __future__ import annotations

import numpy as np
import pytest

from videossl.config import ConfigError, ProbeEvalConfig, parse_config
from videossl.data.synthetic import FAMILIES, NATURAL
from videossl.data.shards import LABELLED
from videossl.eval import suite
from videossl.eval.tasks import (ACCURACY, CLASSIFICATION, CONTROL, DEFAULT_TASKS, HELD_OUT, MATCHED, REAL_TASK, TASK_NAMES, TASKS,
                                 VIEWS, ClipKey, Comparison, Item, Task, of_kind)


def test_every_task_is_defined_once_with_its_reason():
    # the default runs every task of the benchmark world and its footage, in the registry's order; the
    # classification task reads a labelled list, which only a user brings
    assert ProbeEvalConfig().tasks == list(DEFAULT_TASKS) == [n for n in TASK_NAMES if n != CLASSIFICATION]
    for name, spec in TASKS.items():
        assert spec.name == name and (spec.family in FAMILIES or spec.family == LABELLED) and spec.why
        assert spec.scoring in (ACCURACY, MATCHED, VIEWS) and (spec.compare is not None) == (spec.scoring == MATCHED)
    for name in of_kind(HELD_OUT):
        assert len(TASKS[name].why) > 100, f"{name}: say what the label is and why no frame or pretext transformation gives it"
    assert REAL_TASK in TASK_NAMES and REAL_TASK not in TASKS


def test_held_out_labels_never_reach_the_pool():
    """A held-out task's videos come from a probe family (never pretrained on), or from a natural family
    whose label no pretext transformation changes (gravity_law: elastic bounces are reversible)."""
    for name in of_kind(HELD_OUT):
        spec = TASKS[name]
        assert spec.family not in NATURAL or name == "gravity_law", name


def test_params_name_tasks_from_the_registry():
    with pytest.raises(ConfigError, match="probe_eval.tasks.*unknown task"):
        parse_config("probe_eval: {tasks: [gravity_law, gravity_lw]}")
    with pytest.raises(ConfigError, match="register.gate_metrics"):  # no held-out task, no headline to gate on
        parse_config("probe_eval: {tasks: [arrow_of_time]}")


def _matched(items: list[int], comparisons: list[Comparison]) -> Task:
    task = Task(TASKS["permanence"], ["impossible", "possible"],
                {s: [Item(ClipKey("v", i), y) for i, y in enumerate(items)] for s in ("train", "val", "test")},
                {s: comparisons for s in ("train", "val", "test")})
    return task


def test_a_matched_comparison_is_right_when_the_possible_members_score_higher_and_a_tie_is_half():
    task = _matched([1, 1, 0, 0], [Comparison((0, 1), (2, 3), "v")])
    logits = lambda possible: np.stack([np.zeros(4), np.asarray(possible, float)], 1)  # noqa: E731
    assert suite.outcomes_of(task, "test", logits([2, 1, 0, 0.5])).tolist() == [1.0]
    assert suite.outcomes_of(task, "test", logits([0, 0, 1, 0])).tolist() == [0.0]
    # the same sums up to float rounding (a spliced set's order-free features): a tie, not a coin flip
    assert suite.outcomes_of(task, "test", logits([0.1 + 0.2, 0.3, 0.4, 0.2 + 1e-12])).tolist() == [0.5]


def test_a_labelled_video_is_scored_once_by_its_views_mean_and_top5_counts_the_five_highest():
    """Classification is the field's multi-view protocol: a video's clips' scores are averaged, one
    outcome per video (what the bootstrap resamples); top-5 is right when the label is among the five
    classes the video's mean ranks first."""
    classes = [f"c{i}" for i in range(7)]
    items = [Item(ClipKey("a", 0), 3), Item(ClipKey("b", 0), 6), Item(ClipKey("a", 8), 3), Item(ClipKey("b", 8), 6)]
    task = Task(TASKS[CLASSIFICATION], classes, {s: items for s in ("train", "val", "test")})
    scores = np.zeros((4, 7))
    scores[0, 3], scores[2, 1] = 1.0, 0.8  # video a: one view says 3, the other 1; the mean says 3
    scores[1, 0], scores[3, 0] = 1.0, 1.0  # video b (label 6): both views say 0; 6 is ranked last but one
    scores[1, 6], scores[3, 5] = 0.1, 0.2
    assert suite.unit_videos(task) == ["a", "b"]
    assert suite.outcomes_of(task, "test", scores).tolist() == [1.0, 0.0]
    # b's mean ranks 0 (1.0), 5 (0.1), 6 (0.05), then four zeros: 6 is among the top five, and top-1 is not
    assert suite.top_k(task, "test", scores).tolist() == [1.0, 1.0]
    assert suite.top_k(task, "test", scores, k=2).tolist() == [1.0, 0.0]


def test_many_classes_give_every_model_top5_with_intervals_in_scores_and_report():
    """Seven classes, videos of two views each: every model (random-init seeds as one) gets top-1 and
    top-5 per probe and for its chosen probe, each with an interval, and the report shows top-5."""
    from videossl.eval import report
    from videossl.eval.features import ClipFeatures
    from videossl.eval.scores import CHOSEN, TOP
    from videossl.eval.stats import VideoBootstrap

    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(7)]
    items = {s: [Item(ClipKey(f"{s}{c}{v}", start), c) for c in range(7) for v in range(3) for start in (0, 8)]
             for s in ("train", "val", "test")}
    task = Task(TASKS[CLASSIFICATION], classes, items)
    keys = task.keys()
    index = {k: i for i, k in enumerate(keys)}
    labels = np.array([i.label for s in ("train", "val", "test") for i in items[s]])
    signal = np.eye(7)[labels] * 3

    def model(strength: float) -> ClipFeatures:
        vectors = (strength * signal + rng.normal(size=(len(keys), 7))).astype(np.float32)
        return ClipFeatures(vectors, vectors[:, None, :])

    feats = {"video": model(1.0), "frames": model(0.2), "random_init_0": model(0.0), "random_init_1": model(0.0)}
    cfg = ProbeEvalConfig(probes=["linear", "knn"], tasks=["gravity_law", CLASSIFICATION])
    out = suite.classify(task, feats, index, cfg, seed=0)
    boot = VideoBootstrap(suite.unit_videos(task), 200, 0)
    scores = suite.score(out, boot, None, ["frames", "random_init"], None, None)
    assert scores["n_test"] == scores["n_test_videos"] == 21  # one unit per video
    for m in ("video", "frames", "random_init"):
        for key in (m + TOP, m + "_knn" + TOP, m + CHOSEN + TOP):
            assert scores[key + "_ci_low"] <= scores[key] <= scores[key + "_ci_high"], key
        assert scores[m + CHOSEN + TOP] >= scores[m + CHOSEN]  # the first class is among the top five
    assert scores["video" + CHOSEN] > 0.9 and scores["random_init" + TOP] < 0.95
    table = report.markdown_table({"tasks": {CLASSIFICATION: scores}}, ["video", "frames", "random_init"], CHOSEN + TOP)
    assert table.count("\n") == 2 and "| classification |" in table


def test_controls_are_never_in_the_headline():
    assert not set(of_kind(CONTROL)) & set(of_kind(HELD_OUT))
    assert set(of_kind(CONTROL)) == {"reversible_arrow", "future_control"}
