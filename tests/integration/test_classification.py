"""Your labelled videos: a `path label` list of real encoded files -> ingest -> probe-eval's
classification task -> report with per-class scores and intervals.

The videos are written here as H.264 files: two classes that any frame tells apart (a bright square
against a dark disc, each moving), so every reader of frames scores well above chance with the true
labels, and the same videos under a permuted list (labels shuffled across videos) drop to chance:
the labels reach the probes through ingest and the manifest, not something else about the files.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.tiny import tiny_config
from videossl.config import ConfigError
from videossl.data.encode import write_video
from videossl.data.shards import LABELLED, ClipStore
from videossl.steps.ingest import ingest
from videossl.steps.probe_eval import probe_eval

CLASSES = ("bright_square", "dark_disc")
PER_CLASS = 12  # videos per class: 24 videos, about a third of them test videos
FRAMES, SIZE, FPS = 24, 32, 8


def _video(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A shape gliding across a noisy background: its look gives the class away, its path does not."""
    frames = rng.integers(40, 80, size=(FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    y, x = rng.integers(4, SIZE - 12, size=2)
    dy, dx = rng.choice([-1, 1], size=2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for t in range(FRAMES):
        cy, cx = (y + dy * t // 3) % (SIZE - 8) + 4, (x + dx * t // 3) % (SIZE - 8) + 4
        if kind == "bright_square":
            frames[t, cy - 4:cy + 4, cx - 4:cx + 4] = (230, 230, 60)
        else:
            frames[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = (10, 10, 140)
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    lines = []
    for label in CLASSES:
        for i in range(PER_CLASS):
            rel = f"clips/{label}_{i:02d}.mp4"
            (root / "clips").mkdir(exist_ok=True)
            write_video(_video(label, rng), root / rel, FPS, gop=8, crf=18)
            lines.append((rel, label))
    return root, lines


def _write_list(root, lines, name: str, extra: str = "") -> str:
    path = root / name
    path.write_text("# path label\n" + "".join(f"{p} {label}\n" for p, label in lines) + extra)
    return f"list:{path}"


def _evaluate(tmp_path, tiny_models, source: str, name: str) -> dict:
    cfg = tiny_config(tmp_path, f"ingest.sources=[{source}]", "probe_eval.tasks=[classification]",
                      "register.gate_metrics=[classification.video]",
                      "probe_eval.clips_per_video=2")
    data = tmp_path / f"data-{name}"
    ingest(cfg, data)
    probe_eval(cfg, data, tiny_models, tmp_path / f"eval-{name}")
    return json.loads((tmp_path / f"eval-{name}" / "scores.json").read_text())


def test_a_labelled_list_is_ingested_with_its_classes_and_bad_lines_are_quarantined(tmp_path, videos):
    root, lines = videos
    source = _write_list(root, lines[:6], "some.txt", extra="clips/missing.mp4 dark_disc\nonly-a-path.mp4\n"
                         f"{lines[0][0]} bright_square\n{lines[7][0]} dark_disc holdout\n")
    cfg = tiny_config(tmp_path, f"ingest.sources=[{source}]")
    stats = ingest(cfg, tmp_path / "data")
    store = ClipStore(tmp_path / "data")
    labelled = store.videos_in(kind=LABELLED)
    assert sorted(v.labels["class"] for v in labelled) == ["bright_square"] * 6  # the six good lines
    assert not store.pretraining_videos("train", real=True)  # a labelled list is evaluation data
    report = json.loads((tmp_path / "data" / "quarantine.json").read_text())
    reasons = " | ".join(str(r) for r in report.values()) if isinstance(report, dict) else json.dumps(report)
    for expected in ("line 8 of some.txt: file not found", "malformed line 9 of some.txt", "line 10 of some.txt: "
                     "'clips/bright_square_00.mp4' is listed again (first on line 2)",
                     "line 11 of some.txt: split 'holdout' is not one of"):
        assert expected in reasons, (expected, reasons)
    assert stats is not None
    with pytest.raises(ConfigError, match=r"ingest.sources\[0\].*list:.*nope.txt"):
        ingest(tiny_config(tmp_path, f"ingest.sources=[list:{root / 'nope.txt'}]"), tmp_path / "data2")


def test_classification_on_a_labelled_list_scores_every_model_per_class_and_a_permuted_list_is_chance(
        tmp_path, videos, tiny_models):
    root, lines = videos
    true = _evaluate(tmp_path, tiny_models, _write_list(root, lines, "true.txt"), "true")
    task = true["classification"]
    for model in ("video", "frames", "pixels"):
        assert task[model] > 0.8, (model, task[model])  # a frame tells the class: every reader of frames sees it
        assert task[f"{model}_ci_low"] <= task[model] <= task[f"{model}_ci_high"]
    assert "random_init" in task and task["n_test_videos"] >= 4
    per_class = true["per_class"]["classification"]
    assert list(per_class) == list(CLASSES) and all(r["n"] > 0 for r in per_class.values())
    report = (tmp_path / "eval-true" / "report.md").read_text()
    assert "## Classification (your labelled videos)" in report and "**classification, per class**" in report
    assert "| bright_square |" in report and "temporal_score" not in true
    metrics = json.loads((tmp_path / "eval-true" / "metrics.json").read_text())
    assert metrics["classification"]["video"] == task["video_chosen"]  # dvc metrics show it

    # the same files, labels shuffled across videos (half of each class relabelled): chance
    labels = [label for _, label in lines]
    permuted = [(p, labels[(i + PER_CLASS // 2) % len(labels)]) for i, (p, _) in enumerate(lines)]
    shuffled = _evaluate(tmp_path, tiny_models, _write_list(root, permuted, "permuted.txt"), "permuted")
    for model in ("video", "frames", "pixels"):
        assert shuffled["classification"][f"{model}_ci_low"] < 0.5 + 0.05 < task[f"{model}_ci_low"], model
