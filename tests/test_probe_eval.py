"""Probe-eval: tasks split by source video, honest probes, baselines in the same run, outputs."""
import json

import numpy as np
import pytest

from videossl.data.shards import ClipStore
from videossl.eval.probes import linear_probe, wilson_interval
from videossl.eval.tasks import build_tasks, clip_pixels
from videossl.eval.report import MODELS
from videossl.steps.probe_eval import ProbeEvalError, probe_eval


@pytest.fixture(scope="module")
def evaluated(tiny_cfg, tiny_data, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return probe_eval(tiny_cfg, tiny_data, tiny_models, out), out


def test_metrics_have_every_task_model_and_interval(evaluated, tiny_cfg):
    metrics, out = evaluated
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for task in tiny_cfg.probe_eval.tasks:
        s = metrics[task]
        assert s["n_test"] > 0
        for m in MODELS:
            assert 0.0 <= s[f"{m}_ci_low"] <= s[m] <= s[f"{m}_ci_high"] <= 1.0
            assert s[f"{m}_l2"] in tiny_cfg.probe_eval.l2_grid
    assert metrics["speed"]["chance"] == pytest.approx(1 / 3, abs=1e-3)


def test_bag_of_frames_is_exactly_blind_to_the_arrow_of_time(evaluated):
    # Forward and reversed clips contain the same frames: their mean-pooled features are identical,
    # so any probe gives both the same label and scores exactly one half. The leak detector works.
    metrics, _ = evaluated
    assert metrics["arrow_of_time"]["frames"] == 0.5


def test_report_and_plot_are_written(evaluated):
    _, out = evaluated
    png = (out / "plots" / "benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    report = (out / "report.md").read_text()
    assert "| arrow_of_time |" in report and "bag of frames" in report


def test_tasks_never_mix_videos_across_splits(tiny_data, tiny_cfg):
    store = ClipStore(tiny_data)
    tasks = build_tasks(store, tiny_cfg.probe_eval.tasks, tiny_cfg.probe_eval.speeds, 2)
    for task in tasks:
        videos = {s: {k.video for k, _ in task.items[s]} for s in task.items}
        assert videos["train"].isdisjoint(videos["test"]) and videos["val"].isdisjoint(videos["test"])
        for split, items in task.items.items():
            assert all(store.by_id[k.video].split == split for k, _ in items)
    arrow = tasks[0]
    fwd, rev = arrow.items["train"][0][0], arrow.items["train"][1][0]
    assert np.array_equal(clip_pixels(store, rev), clip_pixels(store, fwd)[::-1])
    speed = tasks[1].items["train"]
    fast = next(k for k, y in speed if y == 2)
    window = clip_pixels(store, fast)
    assert window.shape[0] == store.clip_frames  # 4x: same frame count, four times the time span


def test_linear_probe_separates_and_reports_wilson_interval():
    rng = np.random.default_rng(0)
    def make(n):
        y = rng.integers(0, 2, n)
        return rng.normal(size=(n, 5)) + y[:, None] * 3.0, y
    score = linear_probe(make(200), make(50), make(100), classes=2, l2_grid=[1e-3, 1e-1], iters=50)
    assert score.accuracy > 0.95 and score.n == 100
    assert score.ci_low < score.accuracy <= score.ci_high
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_missing_baseline_checkpoint_is_a_clear_error(tiny_cfg, tiny_data, tiny_models, tmp_path):
    (tmp_path / "encoder.pt").symlink_to(tiny_models / "encoder.pt")
    with pytest.raises(ProbeEvalError, match="bag-of-frames baseline"):
        probe_eval(tiny_cfg, tiny_data, tmp_path, tmp_path / "out")
