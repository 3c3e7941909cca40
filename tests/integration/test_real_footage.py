"""Your own footage on its own: a dataset of only real videos (the bundled samples), every real-video
task scored per footage group and pooled, the footage listed in the report. The same CLI calls a
user makes (README "Your own videos"), with a model brought from elsewhere."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.tiny import tiny_params_yaml

REAL_ONLY = ["ingest.sources=[samples]", "probe_eval.tasks=[real_arrow_of_time]",
             "register.gate_metrics=[real_arrow_of_time.video]"]


def videossl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videossl.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def real_only(tmp_path_factory, tiny_models):
    """Ingest the real clips alone, then score them with an encoder trained elsewhere (the README's
    "or bring a model": here the session's tiny pretrained pair, so no second pretraining)."""
    root = tmp_path_factory.mktemp("real-only")
    params = root / "params.yaml"
    params.write_text(tiny_params_yaml(root, *REAL_ONLY))
    for step, args in (("ingest", ["--out", str(root / "data")]),
                       ("probe-eval", ["--data", str(root / "data"), "--models", str(tiny_models),
                                       "--out", str(root / "eval")])):
        proc = videossl(step, "--params", str(params), *args)
        assert proc.returncode == 0, f"{step}: {proc.stderr[-3000:]}"
    return root


def test_a_real_only_dataset_scores_every_real_task_per_group_and_pooled(real_only):
    metrics = json.loads((real_only / "eval" / "scores.json").read_text())
    real = metrics["real_arrow_of_time"]
    for model in ("video", "frames", "ordered_frames", "random_init", "pixels"):
        assert 0 <= real[f"{model}_ci_low"] <= real[model] <= real[f"{model}_ci_high"] <= 1, model
    groups = real["groups"]
    # the bundled samples: three footage groups (carphone's two encodings are one), each held out once
    assert sorted(groups) == ["samples/bigbuckbunny", "samples/bikes", "samples/carphone"]
    assert sum(g["n_test"] for g in groups.values()) == real["n_test"]
    for g in groups.values():
        assert {"video", "frames", "ordered_frames", "pixels"} <= set(g)
    # pooled = the test-size-weighted mean of the groups' scores
    pooled = sum(g["video"] * g["n_test"] for g in groups.values()) / real["n_test"]
    assert pooled == pytest.approx(real["video"], abs=1e-3)
    assert "temporal_score" not in metrics  # no synthetic task: no headline over synthetic tasks
    assert [v["video"] for v in metrics["footage"]] == ["samples/bigbuckbunny.mp4", "samples/bikes.mp4",
                                                        "samples/carphone_distorted.mp4",
                                                        "samples/carphone_pristine.mp4"]


def test_the_report_lists_the_footage_groups_and_the_codec_control(real_only):
    report = (real_only / "eval" / "report.md").read_text()
    assert "real footage only" in report
    assert "## Real footage" in report and "4 real videos in 3 footage groups" in report
    for name in ("samples/bikes.mp4", "samples/carphone_pristine.mp4"):
        assert f"| {name} |" in report
    assert "| samples/carphone | 48 |" in report  # both carphone encodings held out together
    assert "WITHOUT the codec control" in report


def test_the_gate_names_both_keys_when_it_disagrees_with_the_tasks(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(tiny_params_yaml(tmp_path))
    proc = videossl("validate", "--params", str(params), "-S", "probe_eval.tasks=[real_arrow_of_time]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "register.gate_metrics" in proc.stderr and "probe_eval.tasks" in proc.stderr


SHORT_FRAMES = 24  # 3 s at ingest.fps 8: room for test windows, too short to also validate on


def test_short_footage_in_named_groups_is_refused_before_work_saying_what_is_needed(tmp_path, tiny_models):
    """A user's own clips, all shorter than real_arrow_of_time needs: ingest honours the sidecars'
    footage groups (cuts of one source on one side of the split), and probe-eval refuses before any
    feature is extracted, with the length it needs, instead of failing after extraction."""
    import numpy as np

    from videossl.data.encode import write_video
    from videossl.eval.real_video import min_val_frames

    footage = tmp_path / "mine"
    footage.mkdir()
    rng = np.random.default_rng(0)
    for i, group in enumerate(["take-a", "take-a", "take-b", "take-b"]):
        frames = rng.integers(0, 255, (SHORT_FRAMES, 32, 32, 3), dtype=np.uint8)
        write_video(frames, footage / f"cut{i}.mp4", fps=8, gop=8, crf=18)
        (footage / f"cut{i}.json").write_text(json.dumps({"group": group}))
    params = tmp_path / "params.yaml"
    params.write_text(tiny_params_yaml(tmp_path, f"ingest.sources=[{footage}]", *REAL_ONLY[1:]))
    proc = videossl("ingest", "--params", str(params), "--out", str(tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "data" / "manifest.jsonl").read_text().splitlines()]
    groups = {r["source_id"]: r["group"] for r in rows}
    assert set(groups.values()) == {"mine/take-a", "mine/take-b"}
    splits = {}
    for r in rows:
        splits.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values()), splits  # a group never straddles a split

    proc = videossl("probe-eval", "--params", str(params), "--data", str(tmp_path / "data"),
                    "--models", str(tiny_models), "--out", str(tmp_path / "eval"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    need = min_val_frames(8, 0.25)  # tiny params: 8-frame clips, the default val_fraction
    assert SHORT_FRAMES < need and f"at least {need} frames ({need / 8:.1f} s at ingest.fps 8)" in proc.stderr
    assert f"longest other video has {SHORT_FRAMES}" in proc.stderr
    assert "features of" not in proc.stdout  # refused before extraction
