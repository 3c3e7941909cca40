"""Probe-eval: tasks split by source video, honest probes, baselines in the same run, outputs."""
import json
from dataclasses import replace

import numpy as np
import pytest

from tests.tiny import EVERY_TASK, tiny_config
from videossl.data.shards import ClipStore
from videossl.eval import features
from videossl.eval.probes import linear_probe, wilson_interval
from videossl.eval.tasks import HELD_OUT, ClipKey, build_tasks, clip_pixels, of_kind, shuffle_order
from videossl.eval.scores import MODELS
from videossl.steps.probe_eval import ProbeEvalError, probe_eval


@pytest.fixture(scope="module")
def evaluated(tiny_root, tiny_data, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = tiny_config(tiny_root, "probe_eval.workers=2", EVERY_TASK)  # the probes in a pool of processes, as make run does
    return probe_eval(cfg, tiny_data, tiny_models, out), out


@pytest.fixture(scope="module")
def every_task(tiny_root):
    return tiny_config(tiny_root, EVERY_TASK)


def _scored(s: dict, key: str) -> bool:
    return 0.0 <= s[f"{key}_ci_low"] <= s[key] <= s[f"{key}_ci_high"] <= 1.0


def test_metrics_have_every_task_model_probe_and_interval(evaluated, every_task):
    tiny_cfg = every_task
    metrics, out = evaluated
    assert json.loads((out / "scores.json").read_text()) == {k: v for k, v in metrics.items() if k != "seconds"}
    assert set(json.loads((out / "timings.json").read_text())) == set(metrics["seconds"])
    for task in tiny_cfg.probe_eval.tasks:
        s = metrics[task]
        assert s["n_test"] > 0 and 0 < s["chance"] < 1 and 0 < s["n_test_videos"] <= s["n_test"]
        assert s["null_low"] <= s["chance"] <= s["null_high"]
        for m in MODELS:
            for probe in ("", "_attentive", "_knn", "_chosen", "_strongest"):
                assert _scored(s, m + probe), (task, m, probe)
            assert s[f"{m}_strongest"] == max(s[m], s[m + "_attentive"], s[m + "_knn"])
            assert s[f"{m}_strongest_probe"] in ("linear", "attentive", "knn")
            if m != "random_init":  # the seeds' choices differ; their scores are averaged
                assert s[f"{m}_l2"] in tiny_cfg.probe_eval.l2_grid
                assert s[f"{m}_chosen_probe"] in ("linear", "attentive", "knn")
        for b in MODELS[1:]:  # the paired gap of the video model (chosen probe) to every baseline's strongest
            gap = s[f"video_chosen_minus_{b}_strongest"]
            assert gap == pytest.approx(s["video_chosen"] - s[f"{b}_strongest"], abs=2e-4)
            assert s[f"video_chosen_minus_{b}_strongest_ci_low"] <= gap <= s[f"video_chosen_minus_{b}_strongest_ci_high"]
    for task in of_kind(HELD_OUT, tiny_cfg.probe_eval.tasks):  # the held-out tasks have their ceiling
        assert _scored(metrics[task], "supervised")
    assert "supervised" not in metrics["content_count"] and "supervised" not in metrics["arrow_of_time"]
    for task in ("arrow_of_time", "speed", "order"):  # the objective's own heads, beside the probes
        assert _scored(metrics[task], "video_heads")
    assert metrics["dye_arrow"]["n_test_determinable"] <= metrics["dye_arrow"]["n_test"]


def test_the_headline_is_held_out_only_and_relative_to_the_strongest_baseline(evaluated, every_task):
    tiny_cfg = every_task
    metrics, _ = evaluated
    head = metrics["temporal_score"]
    held = of_kind(HELD_OUT, tiny_cfg.probe_eval.tasks)
    assert head["supervised"] == 1.0 and head["tasks"] == ",".join(held)
    for m in MODELS:
        assert head[f"{m}_ci_low"] <= head[m] <= head[f"{m}_ci_high"]
    bars = dict(kv.split("=") for kv in head["baselines"].split(","))
    per_task = []
    for t in held:
        s, bar = metrics[t], bars[t]
        assert s[bar] == max(s[f"{b}_strongest"] for b in MODELS[1:])  # the best baseline with its best probe
        per_task.append((s["video_chosen"] - s[bar]) / max(s["supervised"] - s[bar], 0.05))
        assert head[t] == pytest.approx(per_task[-1], abs=2e-3)
    assert head["video"] == pytest.approx(np.mean(per_task), abs=2e-3)
    for b in MODELS[1:]:  # no baseline is above the strongest one
        assert head[b] <= 1e-9
    assert head["video_minus_frames"] == pytest.approx(head["video"] - head["frames"], abs=2e-4)


def test_the_bag_of_frames_is_exactly_blind_where_frames_are_shared(evaluated):
    # Forward, reversed and shuffled clips hold the same frames, and a matched set's impossible members
    # hold the frames of its possible ones: mean-pooled features are identical, so the linear probe
    # (a linear function of the mean) scores exactly one half, and every probe exactly one half where
    # the clips themselves are identical.
    metrics, _ = evaluated
    for task in ("arrow_of_time", "order", "dye_arrow", "reversible_arrow"):
        for probe in ("frames", "frames_attentive", "frames_knn"):
            assert metrics[task][probe] == 0.5, (task, probe)
    for task in ("permanence", "continuity", "shape_constancy"):
        assert metrics[task]["frames"] == 0.5 and metrics[task]["pixels"] == 0.5, task
    for m in MODELS:  # the future's control pair is one clip twice: exactly chance for every model and probe
        for probe in ("", "_attentive", "_knn"):
            assert metrics["future_control"][m + probe] == 0.5


def test_report_plots_and_dvc_plot_data_are_written(evaluated):
    metrics, out = evaluated
    for name in ("benchmark", "confusion"):
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000, name
    report = (out / "report.md").read_text()
    for heading in ("Held-out tasks", "Trained-on diagnostics", "Content controls", "Controls (every model",
                    "Linear probe", "Attentive probe", "kNN", "Confusion", "strongest baseline"):
        assert heading in report, heading
    assert "| permanence |" in report and "motion statistics" in report and "objective's heads, zero-shot" in report
    # DVC plot data: one bar chart per task, one confusion matrix per accuracy task (the video model's test clips)
    for task, s in metrics.items():
        if not isinstance(s, dict) or "video_chosen" not in s:
            continue
        rows = {r["model"]: r for r in json.loads((out / "plots" / "tasks" / f"{task}.json").read_text())}
        assert rows["video model"]["score"] == s["video_chosen"]
        assert rows["bag of frames"]["ci_low"] == s.get("frames_strongest_ci_low")
    arrow = json.loads((out / "plots" / "confusion" / "arrow_of_time.json").read_text())
    assert len(arrow) == metrics["arrow_of_time"]["n_test"]
    right = sum(r["actual"] == r["predicted"] for r in arrow) / len(arrow)
    assert right == pytest.approx(metrics["arrow_of_time"]["video"], abs=1e-4)


def test_tasks_never_mix_videos_across_splits(tiny_data, every_task):
    tiny_cfg = every_task
    store = ClipStore(tiny_data)
    tasks = build_tasks(store, tiny_cfg.probe_eval.tasks, tiny_cfg.probe_eval.speeds, 2, 2)
    for task in tasks:
        videos = {s: {i.clip.video for i in items} for s, items in task.items.items()}
        assert videos["train"].isdisjoint(videos["test"]) and videos["val"].isdisjoint(videos["test"])
        for split, videos_of_split in videos.items():
            assert all(store.by_id[v].split == split and store.by_id[v].kind == "benchmark" for v in videos_of_split)
            assert all(store.by_id[v].labels["family"] == task.spec.family for v in videos_of_split)
        for split, comparisons in task.comparisons.items():  # a matched comparison stays inside one set (video)
            for c in comparisons:
                assert {task.items[split][i].clip.video for i in c.better + c.worse} == {c.video}
                assert all(task.items[split][i].label == 1 for i in c.better)
                assert all(task.items[split][i].label == 0 for i in c.worse)
    by = {t.name: t for t in tasks}
    arrow = by["arrow_of_time"]
    fwd, rev = arrow.items["train"][0].clip, arrow.items["train"][1].clip
    assert np.array_equal(clip_pixels(store, rev), clip_pixels(store, fwd)[::-1])
    fast = next(i.clip for i in by["speed"].items["train"] if i.label == 2)
    assert clip_pixels(store, fast).shape[0] == store.clip_frames  # 4x: same frame count, four times the time span
    shuffled = next(i.clip for i in by["order"].items["train"] if i.label == 0)
    got, ordered = clip_pixels(store, shuffled), clip_pixels(store, replace(shuffled, shuffled=False))
    assert sorted(map(bytes, got)) == sorted(map(bytes, ordered))  # the same frames ...
    assert not np.array_equal(got, ordered) and not np.array_equal(got, ordered[::-1])  # ... in another order
    assert [k.frame_indices(store.clip_frames) for k in (shuffled,)] == [
        [shuffled.start + i for i in shuffle_order(shuffled, store.clip_frames)]]
    for item in by["permanence"].items["test"]:  # a set's members are its segments, whole
        video = store.by_id[item.clip.video]
        member = next(s for s in video.labels["segments"] if s["start"] == item.clip.start)
        assert item.label == member["possible"] and item.clip.start % store.clip_frames == 0


def test_clips_start_at_random_phases_and_each_speed_at_its_own(tiny_data, tiny_cfg):
    store = ClipStore(tiny_data)
    speed, arrow = build_tasks(store, ["speed", "arrow_of_time"], [1, 2, 4], 2, 2)
    starts = [i.clip.start for items in arrow.items.values() for i in items]
    assert len({s % tiny_cfg.ingest.synthetic.gop for s in starts}) > 2  # not in step with the keyframes
    for split, items in speed.items.items():
        by_video: dict[str, dict[int, set[int]]] = {}
        for item in items:
            by_video.setdefault(item.clip.video, {}).setdefault(item.label, set()).add(item.clip.start)
        # within a video the 1x, 2x and 4x clips do not share their starts: where in the video a clip
        # is cannot tell its speed
        shared = [v for v, s in by_video.items() if len(s) == 3 and s[0] == s[1] == s[2]]
        assert len(shared) < len(by_video) / 2
    assert all(i.determinability > 0 for i in arrow.items["train"])
    assert build_tasks(store, ["arrow_of_time"], [1, 2, 4], 2, 2)[0].items == arrow.items  # seeded: the same clips


def test_content_labels_come_from_the_videos(tiny_data):
    store = ClipStore(tiny_data)
    gravity, count, shape = build_tasks(store, ["gravity_law", "content_count", "content_shape"], [1, 2, 4], 2, 2)
    for task, key, offset in ((gravity, "gravity", 0), (count, "n_objects", -1)):
        for items in task.items.values():
            assert all(i.label == store.by_id[i.clip.video].labels[key] + offset for i in items)
    for items in shape.items.values():
        assert len({i.label for i in items}) == 3  # every shape in every split (the design is balanced)


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


def test_a_checkpoint_that_is_not_what_pretraining_recorded_is_refused(tiny_cfg, tiny_data, tiny_models, tmp_path):
    """pretrain.json records each encoder's weights' digest: an encoder.pt swapped or edited afterwards
    (here: another run's weights under the same name) is refused before any work, naming both digests."""
    import shutil

    import torch

    from videossl.models.checkpoint import load_checkpoint, save_checkpoint, state_digest

    for name in ("encoder.pt", "frame_encoder.pt", "pretrain.json"):
        shutil.copy(tiny_models / name, tmp_path / name)
    state = load_checkpoint(tmp_path / "encoder.pt")
    state["encoder"] = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state["encoder"].items()}
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, tmp_path / "encoder.pt")
    with pytest.raises(ProbeEvalError, match=rf"encoder.pt holds weights sha256 {state_digest(state['encoder'])}, "
                                             r"but its pretraining recorded [0-9a-f]{64}"):
        probe_eval(tiny_cfg, tiny_data, tmp_path, tmp_path / "out")


def test_probe_eval_scores_against_the_ceiling_steps_record_and_refuses_another(tiny_root, tiny_data, tiny_models,
                                                                             tmp_path):
    """The ceiling step (dvc.yaml's stage, the KFP task beside pretraining) trains once per dataset; probe-eval
    reads its record, and refuses one trained with other settings before doing any work."""
    from videossl.steps.ceiling import CeilingError, ceiling

    tasks = ("probe_eval.tasks=[gravity_law, permanence, arrow_of_time]", "probe_eval.probes=[linear]",
             "probe_eval.cache_dir=null")  # no cache: each run of the step trains
    cfg = tiny_config(tiny_root, *tasks)
    ceiling(cfg, tiny_data, tmp_path / "ceiling")
    first = (tmp_path / "ceiling" / "ceiling.json").read_bytes()
    record = json.loads(first)
    assert set(record["correct"]) == {"gravity_law", "permanence"}  # held-out tasks only
    ceiling(cfg, tiny_data, tmp_path / "ceiling")
    assert (tmp_path / "ceiling" / "ceiling.json").read_bytes() == first  # no wall time: the same bytes (DVC, git)
    metrics = json.loads((tmp_path / "ceiling" / "metrics.json").read_text())
    assert set(metrics) == {"gravity_law", "permanence"} and set(metrics["permanence"]) == {"val", "test", "step"}

    scored = probe_eval(cfg, tiny_data, tiny_models, tmp_path / "eval", ceiling_dir=tmp_path / "ceiling")
    for task, correct in record["correct"].items():
        assert scored[task]["supervised"] == pytest.approx(np.mean(correct), abs=1e-4), task

    other = tiny_config(tiny_root, *tasks, "probe_eval.ceiling.steps=5")
    with pytest.raises(CeilingError, match="another cfg .*run `videossl ceiling` again"):
        probe_eval(other, tiny_data, tiny_models, tmp_path / "other", ceiling_dir=tmp_path / "ceiling")
    assert not (tmp_path / "other" / "scores.json").exists()
    with pytest.raises(CeilingError, match="cannot read the ceiling"):
        probe_eval(cfg, tiny_data, tiny_models, tmp_path / "other", ceiling_dir=tmp_path / "nowhere")


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

    def task(gap: float, low: float, high: float) -> dict:
        return {"motion_strongest": 0.6, "frames_strongest": 0.5, "video_chosen_minus_motion_strongest": gap,
                "video_chosen_minus_motion_strongest_ci_low": low, "video_chosen_minus_motion_strongest_ci_high": high}

    text = conclusion({"tasks": {"temporal_score": {"video": 0.5, "video_ci_low": 0.4, "video_ci_high": 0.6},
                                 "permanence": task(0.3, 0.2, 0.4), "causality": task(-0.2, -0.3, -0.1),
                                 "future": task(0.05, -0.02, 0.1)}}, MODELS)
    assert text.startswith("The video model's temporal score is 0.500 [0.40, 0.60]")
    assert "- Above the strongest baseline: permanence (vs motion statistics)." in text
    assert "- Below it: causality (vs motion statistics)." in text  # losses are said, not left out
    assert "- Not distinguishable from it: future (vs motion statistics)." in text
    assert conclusion({"tasks": {}}, MODELS) == ""


def test_the_ceiling_is_the_same_trained_in_parallel(tiny_data, every_task):
    """Each task's network is seeded on its own: training them in worker processes changes nothing."""
    from videossl.eval.ceiling import train_ceiling

    ecfg = every_task.probe_eval
    store = ClipStore(tiny_data)
    tasks = build_tasks(store, ["gravity_law", "permanence"], ecfg.speeds, 2, 2)
    args = (store, tasks, ecfg.speeds, every_task.ingest.synthetic.max_objects, ecfg.ceiling, 0)
    alone, parallel = train_ceiling(*args, log=lambda _: None), train_ceiling(*args, log=lambda _: None, workers=2)
    for t in tasks:
        assert np.array_equal(alone.correct[t.name], parallel.correct[t.name])
        assert alone.val_accuracy[t.name] == parallel.val_accuracy[t.name] and alone.step[t.name] == parallel.step[t.name]
