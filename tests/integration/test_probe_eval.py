"""Probe-eval: tasks split by source video, honest probes, baselines in the same run, outputs."""
import json
from dataclasses import replace

import numpy as np
import pytest

from tests.tiny import tiny_config
from videossl.data.shards import ClipStore
from videossl.eval import features
from videossl.eval.probes import linear_probe, wilson_interval
from videossl.eval.tasks import ClipKey, Task, build_tasks, clip_pixels, shuffle_order
from videossl.eval.report import MODELS
from videossl.steps.probe_eval import ProbeEvalError, probe_eval


@pytest.fixture(scope="module")
def evaluated(tiny_root, tiny_data, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(tiny_root, "probe_eval.workers=2")  # the probes in a pool of processes, as make run does
    return probe_eval(cfg, tiny_data, tiny_models, out), out


def _scored(s: dict, key: str) -> bool:
    return 0.0 <= s[f"{key}_ci_low"] <= s[key] <= s[f"{key}_ci_high"] <= 1.0


def test_metrics_have_every_task_model_probe_and_interval(evaluated, tiny_cfg):
    metrics, out = evaluated
    assert json.loads((out / "scores.json").read_text()) == {k: v for k, v in metrics.items() if k != "seconds"}
    assert set(json.loads((out / "timings.json").read_text())) == set(metrics["seconds"])
    classification = [t for t in tiny_cfg.probe_eval.tasks if t != "future_retrieval"]
    for task in classification + ["future_retrieval", "time_vector"]:
        s = metrics[task]
        assert s["n_test"] > 0 and 0 < s["chance"] < 1 and 0 < s["n_test_videos"] <= s["n_test"]
        for m in MODELS:
            assert _scored(s, m), (task, m)
    for task in classification:
        s = metrics[task]
        assert s["null_low"] <= s["chance"] <= s["null_high"]
        for m in MODELS:
            assert _scored(s, f"{m}_attentive") and _scored(s, f"{m}_knn")
            if m != "random_init":  # the seeds' choices differ; their scores are averaged
                assert s[f"{m}_l2"] in tiny_cfg.probe_eval.l2_grid
                assert 1 <= s[f"{m}_knn_k"] <= max(tiny_cfg.probe_eval.knn.ks)  # k <= training items
        for b in MODELS[1:]:  # the paired gap of the video model to every baseline
            gap = s[f"video_minus_{b}"]
            assert gap == pytest.approx(s["video"] - s[b], abs=2e-4)
            assert s[f"video_minus_{b}_ci_low"] <= gap <= s[f"video_minus_{b}_ci_high"]
    for task in ("arrow_of_time", "speed", "gravity", "order"):  # the temporal tasks have their ceiling
        assert _scored(metrics[task], "supervised")
    assert "supervised" not in metrics["content_count"]
    assert metrics["arrow_of_time"]["n_test_determinable"] <= metrics["arrow_of_time"]["n_test"]
    for m in MODELS:  # retrieval: cosine R@1 is primary, beside R@5, the predictor and within-video
        s = metrics["future_retrieval"]
        assert all(_scored(s, k) for k in (f"{m}_r5", f"{m}_predictor", f"{m}_predictor_r5", f"{m}_within_video"))
        assert s[f"{m}_r5"] >= s[m]
    r = metrics["future_retrieval"]
    assert r["chance"] == pytest.approx(1 / r["n_test"], abs=1e-4) and r["chance_r5"] == pytest.approx(5 / r["n_test"], abs=1e-4)
    assert r["chance"] < r["within_video_chance"] <= 0.5


def test_the_headline_is_relative_to_the_bag_of_frames_and_the_ceiling(evaluated):
    metrics, _ = evaluated
    head = metrics["temporal_score"]
    assert head["frames"] == 0.0 and head["supervised"] == 1.0
    assert head["tasks"] == "arrow_of_time,speed,gravity,order"
    for m in ("video", "ordered_frames", "random_init", "pixels"):
        assert head[f"{m}_ci_low"] <= head[m] <= head[f"{m}_ci_high"]
    expected = np.mean([(metrics[t]["video"] - metrics[t]["frames"])
                        / max(metrics[t]["supervised"] - metrics[t]["frames"], 0.05)
                        for t in ("arrow_of_time", "speed", "gravity", "order")])
    assert head["video"] == pytest.approx(expected, abs=2e-3)
    assert (head["video_minus_frames"], head["video_minus_frames_ci_low"]) == (head["video"], head["video_ci_low"])


def test_bag_of_frames_is_exactly_blind_to_frame_order(evaluated):
    # Forward, reversed and shuffled clips contain the same frames: their mean-pooled features (and
    # tokens) are identical, so every probe gives them the same label and scores exactly one half.
    # The leak detector works, for each probe and for the time vector.
    metrics, _ = evaluated
    for task in ("arrow_of_time", "order"):
        for probe in ("frames", "frames_attentive", "frames_knn"):
            assert metrics[task][probe] == 0.5, (task, probe)
    assert metrics["time_vector"]["frames"] == 0.5


def test_report_plots_and_dvc_plot_data_are_written(evaluated):
    metrics, out = evaluated
    for name in ("benchmark", "confusion", "time_vector"):
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
    report = (out / "report.md").read_text()
    for heading in ("Linear probe", "Attentive probe", "kNN", "predictor", "Time vector", "Confusion"):
        assert heading in report
    assert "| arrow_of_time |" in report and "video − bag of frames" in report and "video − raw pixels" in report
    # DVC plot data: one bar chart per task, one confusion matrix per task (the video model's test clips)
    for task, s in metrics.items():
        if not isinstance(s, dict) or "video" not in s:
            continue
        rows = {r["model"]: r for r in json.loads((out / "plots" / "tasks" / f"{task}.json").read_text())}
        assert rows["video model"]["score"] == s["video"] and rows["bag of frames"]["ci_low"] == s.get("frames_ci_low")
    arrow = json.loads((out / "plots" / "confusion" / "arrow_of_time.json").read_text())
    assert len(arrow) == metrics["arrow_of_time"]["n_test"]
    right = sum(r["actual"] == r["predicted"] for r in arrow) / len(arrow)
    assert right == pytest.approx(metrics["arrow_of_time"]["video"], abs=1e-4)


def test_tasks_never_mix_videos_across_splits(tiny_data, tiny_cfg):
    store = ClipStore(tiny_data)
    tasks = build_tasks(store, tiny_cfg.probe_eval.tasks, tiny_cfg.probe_eval.speeds, 2)
    for task in tasks:
        items = task.items if isinstance(task, Task) else task.pairs  # retrieval: (clip, future clip)
        videos = {s: {k.video for pair in items[s] for k in pair if isinstance(k, ClipKey)} for s in items}
        assert videos["train"].isdisjoint(videos["test"]) and videos["val"].isdisjoint(videos["test"])
        for split, videos_of_split in videos.items():
            assert all(store.by_id[v].split == split and store.by_id[v].kind == "benchmark" for v in videos_of_split)
    by = {t.name: t for t in tasks}
    arrow = by["arrow_of_time"]
    fwd, rev = arrow.items["train"][0][0], arrow.items["train"][1][0]
    assert np.array_equal(clip_pixels(store, rev), clip_pixels(store, fwd)[::-1])
    speed = by["speed"].items["train"]
    fast = next(k for k, y in speed if y == 2)
    window = clip_pixels(store, fast)
    assert window.shape[0] == store.clip_frames  # 4x: same frame count, four times the time span
    shuffled = next(k for k, y in by["order"].items["train"] if y == 0)
    got, ordered = clip_pixels(store, shuffled), clip_pixels(store, replace(shuffled, shuffled=False))
    assert sorted(map(bytes, got)) == sorted(map(bytes, ordered))  # the same frames ...
    assert not np.array_equal(got, ordered) and not np.array_equal(got, ordered[::-1])  # ... in another order
    assert np.array_equal(got, clip_pixels(store, shuffled))  # the same permutation every time
    assert [k.frame_indices(store.clip_frames) for k in (shuffled,)] == [
        [shuffled.start + i for i in shuffle_order(shuffled, store.clip_frames)]]


def test_clips_start_at_random_phases_and_each_speed_at_its_own(tiny_data, tiny_cfg):
    store = ClipStore(tiny_data)
    speed, arrow = build_tasks(store, ["speed", "arrow_of_time"], [1, 2, 4], 2)
    starts = [k.start for items in arrow.items.values() for k, _ in items]
    assert len({s % tiny_cfg.ingest.synthetic.gop for s in starts}) > 2  # not in step with the keyframes
    for split, items in speed.items.items():
        by_video: dict[str, dict[int, set[int]]] = {}
        for key, label in items:
            by_video.setdefault(key.video, {}).setdefault(label, set()).add(key.start)
        # within a video the 1x, 2x and 4x clips do not share their starts: where in the video a clip
        # is cannot tell its speed
        shared = [v for v, s in by_video.items() if len(s) == 3 and s[0] == s[1] == s[2]]
        assert len(shared) < len(by_video) / 2
    record = arrow.determinability["train"]
    assert len(record) == len(arrow.items["train"]) and min(record) > 0
    assert build_tasks(store, ["arrow_of_time"], [1, 2, 4], 2)[0].items == arrow.items  # seeded: the same clips


def test_future_retrieval_pairs_and_content_labels(tiny_data, tiny_cfg):
    store = ClipStore(tiny_data)
    future, count, shape = build_tasks(store, ["future_retrieval", "content_count", "content_shape"], [1, 2, 4], 2,
                                       None, 2)
    for split, pairs in future.pairs.items():
        assert len(pairs) == len(future.groups[split])
        for (now, later), group in zip(pairs, future.groups[split]):
            assert later.video == now.video == group and later.start - now.start == store.clip_frames
    for split, items in count.items.items():
        for key, label in items:
            assert label + 1 == store.by_id[key.video].labels["n_objects"]
    for split, items in shape.items.items():
        assert len({y for _, y in items}) == 3  # every shape in every split (the design is balanced)


def test_features_are_cached_by_model_and_dataset(tiny_data, tmp_path):
    """A second extraction embeds nothing; a damaged cache file is recomputed, not trusted."""
    store = ClipStore(tiny_data)
    keys = [ClipKey(v.source_id, 0) for v in store.videos[:3]]
    calls = []
    base = features.pixel_model(2)

    def counting(clips):
        calls.append(len(clips))
        return base.featurize(clips)

    model = features.FeatureModel("pixels", base.identity, counting)
    cache = features.FeatureCache(tmp_path, "digest-a")
    first = features.extract(store, keys, [model], 2, cache)["pixels"]
    assert sum(calls) == 3 and cache.path(model).is_file()
    again = features.extract(store, keys, [model], 2, cache)["pixels"]
    assert sum(calls) == 3 and np.array_equal(again.vectors, first.vectors) and np.array_equal(again.tokens, first.tokens)
    features.extract(store, keys, [model], 2, features.FeatureCache(tmp_path, "digest-b"))  # another dataset
    assert sum(calls) == 6
    cache.path(model).write_bytes(b"not an npz")
    assert np.array_equal(features.extract(store, keys, [model], 2, cache)["pixels"].vectors, first.vectors)
    assert sum(calls) == 9


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


def test_report_for_the_kfp_ui_embeds_its_plots(evaluated):
    """KFP's Markdown viewer gets only the text: every plot the report links is inlined."""
    import base64

    from videossl.eval.report import inline_images

    _, out = evaluated
    text = inline_images((out / "report.md").read_text(), out)
    assert "](plots/" not in text
    first = text.split("data:image/png;base64,", 1)[1].split(")", 1)[0]
    assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_states_its_conclusion_from_the_paired_intervals():
    from videossl.eval.report import conclusion

    task = {"video_minus_frames": 0.3, "video_minus_frames_ci_low": 0.2, "video_minus_frames_ci_high": 0.4,
            "video_minus_pixels": -0.2, "video_minus_pixels_ci_low": -0.3, "video_minus_pixels_ci_high": -0.1}
    unsure = {"video_minus_frames": 0.05, "video_minus_frames_ci_low": -0.02, "video_minus_frames_ci_high": 0.1}
    text = conclusion({"tasks": {"temporal_score": {"video": 0.5, "video_ci_low": 0.4, "video_ci_high": 0.6},
                                 "speed": task, "order": unsure}})
    assert text.startswith("The video model's temporal score is 0.500 [0.40, 0.60]")
    assert "- Against bag of frames: better on speed (95% paired intervals)." in text  # not order: its interval spans 0
    assert "- Against raw pixels: better on no task; worse on speed" in text
    assert conclusion({"tasks": {}}) == ""
