"""The task registry is the one place the task list lives, and matched tasks are scored by comparison."""
from __future__ import annotations

import numpy as np
import pytest

from videossl.config import ConfigError, ProbeEvalConfig, parse_config
from videossl.data.synthetic import FAMILIES, NATURAL
from videossl.data.shards import LABELLED
from videossl.eval import suite
from videossl.eval.tasks import (ACCURACY, CLASSIFICATION, CONTROL, DEFAULT_TASKS, HELD_OUT, MATCHED, REAL_TASK, TASK_NAMES, TASKS, ClipKey,
                                 Comparison, Item, Task, of_kind)


def test_every_task_is_defined_once_with_its_reason():
    # the default runs every task of the benchmark world and its footage, in the registry's order; the
    # classification task reads a labelled list, which only a user brings
    assert ProbeEvalConfig().tasks == list(DEFAULT_TASKS) == [n for n in TASK_NAMES if n != CLASSIFICATION]
    for name, spec in TASKS.items():
        assert spec.name == name and (spec.family in FAMILIES or spec.family == LABELLED) and spec.why
        assert spec.scoring in (ACCURACY, MATCHED) and (spec.compare is not None) == (spec.scoring == MATCHED)
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


def test_controls_are_never_in_the_headline():
    assert not set(of_kind(CONTROL)) & set(of_kind(HELD_OUT))
    assert set(of_kind(CONTROL)) == {"reversible_arrow", "future_control"}
