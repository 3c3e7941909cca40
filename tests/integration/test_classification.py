"""Your labelled videos: a `path label` list of real encoded files -> ingest -> probe-eval's
classification task -> report with per-class scores and intervals, for videossl's model and a tiny
Hugging Face V-JEPA 2 (VJEPA2Model, built from its config: no hub) beside every baseline.

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
from videossl.data import lists
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


VJEPA2 = "videossl.adapters.hf_vjepa2:factory"  # a tiny, randomly initialised HF V-JEPA 2 (no hub download)


def _evaluate(tmp_path, tiny_models, source: str, name: str, *extra: str) -> dict:
    cfg = tiny_config(tmp_path, f"ingest.sources=[{source}]", "probe_eval.tasks=[classification]",
                      "register.gate_metrics=[classification.video]",
                      "probe_eval.clips_per_video=2", *extra)
    data = tmp_path / f"data-{name}"
    ingest(cfg, data)
    probe_eval(cfg, data, tiny_models, tmp_path / f"eval-{name}", encoders=[VJEPA2])
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
    # ingested at its own clip shape, not the one the models were trained at (32 px, 8 frames): every
    # encoder reads it at its own input (videossl's resized to 32 x 8, V-JEPA 2 to its native one)
    true = _evaluate(tmp_path, tiny_models, _write_list(root, lines, "true.txt"), "true",
                     "ingest.size=48", "ingest.clip_frames=16")
    assert ClipStore(tmp_path / "data-true").size == 48 and ClipStore(tmp_path / "data-true").clip_frames == 16
    task = true["classification"]
    for model in ("video", "frames", "pixels", "ext_hf_vjepa2"):
        assert task[model] > 0.8, (model, task[model])  # a frame tells the class: every reader of frames sees it
        assert task[f"{model}_ci_low"] <= task[model] <= task[f"{model}_ci_high"]
    assert "random_init" in task and task["n_test_videos"] >= 4
    per_class = true["per_class"]["classification"]
    assert list(per_class) == list(CLASSES) and all(r["n"] > 0 for r in per_class.values())
    assert all({"video", "frames", "ext_hf_vjepa2"} <= set(r) for r in per_class.values())
    report = (tmp_path / "eval-true" / "report.md").read_text()
    assert "## Classification (your labelled videos)" in report and "**classification, per class**" in report
    assert "| bright_square |" in report and "temporal_score" not in true
    metrics = json.loads((tmp_path / "eval-true" / "metrics.json").read_text())
    assert metrics["classification"]["video"] == task["video_chosen"]  # dvc metrics show it

    # the same files, labels shuffled across videos (half of each class relabelled): chance
    labels = [label for _, label in lines]
    permuted = [(p, labels[(i + PER_CLASS // 2) % len(labels)]) for i, (p, _) in enumerate(lines)]
    shuffled = _evaluate(tmp_path, tiny_models, _write_list(root, permuted, "permuted.txt"), "permuted")
    for model in ("video", "frames", "pixels", "ext_hf_vjepa2"):
        assert shuffled["classification"][f"{model}_ci_low"] < 0.5 + 0.05 < task[f"{model}_ci_low"], model


def test_ssv2_and_kinetics_annotations_are_read_as_their_datasets_ship_them(tmp_path, videos):
    """SSv2's JSON with its labels file and Kinetics' CSV, over real encoded files laid out as the datasets
    unpack: the class (SSv2's template, Kinetics' label), the group (the video, the YouTube id), Kinetics'
    own split; a bad entry is quarantined naming its number, the rest ingested."""
    import shutil

    root, lines = videos
    ssv2 = tmp_path / "ssv2"
    (ssv2 / lists.SSV2_VIDEOS).mkdir(parents=True)
    templates = {"bright_square": "Moving [something] up", "dark_disc": "Pushing [something] from left to right"}
    entries = []
    for i, (rel, label) in enumerate(lines[:4] + lines[-4:]):
        shutil.copy(root / rel, ssv2 / lists.SSV2_VIDEOS / f"{1000 + i}.webm")
        entries.append({"id": str(1000 + i), "label": "a thing", "template": templates[label], "placeholders": ["x"]})
    entries.append({"id": "99", "template": "Not a template of SSv2"})
    (ssv2 / "something-something-v2-train.json").write_text(json.dumps(entries))
    (ssv2 / lists.SSV2_LABELS).write_text(json.dumps({t.replace("[", "").replace("]", ""): str(i)
                                                       for i, t in enumerate(templates.values())}))
    kinetics = tmp_path / "kinetics"
    rows = ["label,youtube_id,time_start,time_end,split"]
    for i, (rel, label) in enumerate(lines[:4] + lines[-4:]):
        yid = f"yt{i // 2:03d}"  # two clips of each upload
        stem = f"{yid}_{10 * i:06d}_{10 * i + 10:06d}.mp4"
        (kinetics / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, kinetics / label / stem)
        rows.append(f"{label},{yid},{10 * i},{10 * i + 10},{'train' if i % 4 < 2 else 'validate'}")
    rows.append("dark_disc,ytmissing,0,10,train")
    (kinetics / "kinetics_mine.csv").write_text("\n".join(rows) + "\n")

    cfg = tiny_config(tmp_path, f"ingest.sources=[ssv2:{ssv2 / 'something-something-v2-train.json'}, "
                                f"kinetics:{kinetics / 'kinetics_mine.csv'}]")
    ingest(cfg, tmp_path / "data")
    videos_ = ClipStore(tmp_path / "data").videos_in(kind=LABELLED)
    by_source = {v.source_id.split("/")[0]: [] for v in videos_}
    for v in videos_:
        by_source[v.source_id.split("/")[0]].append(v)
    assert sorted({v.labels["class"] for v in by_source["ssv2"]}) == ["Moving_something_up",
                                                                       "Pushing_something_from_left_to_right"]
    assert len(by_source["ssv2"]) == 8 and len(by_source["kinetics"]) == 8
    assert sorted({v.labels["class"] for v in by_source["kinetics"]}) == list(CLASSES)
    for group in {v.group for v in by_source["kinetics"]}:  # clips of one upload share a group and a split
        assert len({v.split for v in by_source["kinetics"] if v.group == group}) == 1
    assert {v.split for v in by_source["kinetics"]} == {"train", "val"}
    reasons = json.dumps(json.loads((tmp_path / "data" / "quarantine.json").read_text()))
    assert "entry 9 of something-something-v2-train.json: template 'Not a template of SSv2'" in reasons
    assert "line 10 of kinetics_mine.csv: ytmissing_000000_000010.mp4 not found" in reasons
