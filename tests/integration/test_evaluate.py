"""`videossl evaluate --encoder`: any encoder on the full temporal suite, beside this project's model
and every baseline, in one report; an encoder alone (no videossl model anywhere), against its own bag
of frames, ordered frames and random initialisation; the Hugging Face VideoMAE adapter on a randomly
initialised model (no hub download); a vector-only encoder; contract errors in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.tiny import REPO, tiny_params_yaml
from videossl.eval.external import ExternalEncoderError, external_models, frame_model, name_of, reinitialised
from videossl.eval.features import MEAN_FRAMES
from videossl.eval.scores import BASELINES, MODELS

HF = "videossl.adapters.hf_videomae:factory"
MEAN_PIXELS = "tests.integration.test_evaluate:mean_pixels"  # a [B, F] encoder: one vector per clip


class MeanPixels(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(3, 4)).flatten(1)  # [B, 3 * T]: a colour per frame, in time order


def mean_pixels(spec, arg):
    return MeanPixels()


def broken(spec, arg):
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.flatten(2)  # [B, 3, T*H*W]: neither tokens nor vectors
    return Flat()


EVAL_TASKS = ["gravity_law", "permanence", "arrow_of_time", "content_count"]


@pytest.fixture(scope="module")
def evaluated(tiny_data, tiny_models, tmp_path_factory):
    """`videossl evaluate` as a user runs it, with two encoders (one run: it is the slow part)."""
    root = tmp_path_factory.mktemp("evaluate")
    params = root / "params.yaml"
    params.write_text(tiny_params_yaml(root, f"probe_eval.tasks=[{', '.join(EVAL_TASKS)}]", "probe_eval.probes=[linear]"))
    proc = subprocess.run([sys.executable, "-m", "videossl.cli", "evaluate", "--params", str(params), "--encoder", HF,
                           "--encoder", MEAN_PIXELS, "--data", str(tiny_data), "--models", str(tiny_models),
                           "--out", str(root / "ev")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((root / "ev" / "scores.json").read_text()), root / "ev", proc.stdout


def test_every_task_scores_the_external_encoders_beside_the_project_and_its_baselines(evaluated):
    metrics, out, stdout = evaluated
    names = [name_of(HF), name_of(MEAN_PIXELS)]
    assert names == ["ext_hf_videomae", "ext_test_evaluate_mean_pixels"]
    assert "ext_hf_videomae" in stdout  # the console table too
    for task in EVAL_TASKS:
        scores = metrics[task]
        for model in [*MODELS, *names]:
            assert 0 <= scores[f"{model}_ci_low"] <= scores[model] <= scores[f"{model}_ci_high"] <= 1, (task, model)
    head = metrics["temporal_score"]
    assert all(name in head for name in names)  # the headline too, relative to the same strongest baseline
    report = (out / "report.md").read_text()
    assert "| video model | bag of frames |" in report and "ext_hf_videomae" in report
    # the paired gap of this project's model to each external encoder, as to every baseline
    gap = "video_chosen_minus_ext_hf_videomae_strongest"
    assert metrics["permanence"][gap + "_ci_low"] <= metrics["permanence"][gap] <= metrics["permanence"][gap + "_ci_high"]
    table = [line for line in report.splitlines() if line.startswith("| task |")][0]
    assert table.index("video model") < table.index("ext_hf_videomae")


@pytest.fixture(scope="module")
def alone(tiny_data, tmp_path_factory):
    """`videossl evaluate --encoder` where there is no videossl model at all: a fresh folder, no --models."""
    root = tmp_path_factory.mktemp("evaluate-alone")
    params = root / "params.yaml"
    params.write_text(tiny_params_yaml(root, f"probe_eval.tasks=[{', '.join(EVAL_TASKS)}]", "probe_eval.probes=[linear]"))
    proc = subprocess.run([sys.executable, "-m", "videossl.cli", "evaluate", "--params", str(params), "--encoder", HF,
                           "--encoder", MEAN_PIXELS, "--data", str(tiny_data), "--out", "ev"],
                          capture_output=True, text=True, timeout=900, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # the test module is an encoder
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((root / "ev" / "scores.json").read_text()), root / "ev", proc.stdout


def test_an_encoder_alone_gets_the_full_report_against_its_own_baselines(alone):
    metrics, out, stdout = alone
    subject, other = name_of(HF), name_of(MEAN_PIXELS)
    assert "evaluating videossl.adapters.hf_videomae:factory alone" in stdout
    for task in EVAL_TASKS:
        scores = metrics[task]
        assert "video" not in scores  # no videossl model was there to score
        for model in [subject, *BASELINES, other]:
            assert 0 <= scores[f"{model}_ci_low"] <= scores[model] <= scores[f"{model}_ci_high"] <= 1, (task, model)
        # the subject's paired gaps, as the video model's would be
        gap = f"{subject}_chosen_minus_motion_strongest"
        assert scores[gap + "_ci_low"] <= scores[gap] <= scores[gap + "_ci_high"]
    head = metrics["temporal_score"]
    assert subject in head and other in head and "gravity_law" in head  # the per-task share is the subject's
    dvc_metrics = json.loads((out / "metrics.json").read_text())
    assert subject in dvc_metrics["temporal_score"] and subject in dvc_metrics["gravity_law"]
    report = (out / "report.md").read_text()
    assert f"No videossl model was evaluated: the subject is `{subject}`" in report
    assert "## Conclusion" in report and f"The {subject}'s temporal score is" in report
    table = [line for line in report.splitlines() if line.startswith("| task |")][0]
    assert table.index(subject) < table.index(other) < table.index("bag of frames") < table.index("random init")
    assert (out / "plots" / "benchmark.png").is_file() and (out / "plots" / "tasks" / "gravity_law.json").is_file()


def test_an_encoders_own_baselines_see_no_order_and_no_trained_weight(tiny_cfg):
    (model,) = [m for m in external_models([HF], tiny_cfg.ingest.clip_frames, tiny_cfg.ingest.size, 2)]
    from videossl.adapters.hf_videomae import factory
    from videossl.eval.external import ClipSpec

    encoder = factory(ClipSpec(tiny_cfg.ingest.clip_frames, tiny_cfg.ingest.size), None)
    bag = frame_model("frames", HF, encoder, tiny_cfg.ingest.clip_frames, 2, MEAN_FRAMES)
    frames = torch.randint(0, 255, (3, 1, tiny_cfg.ingest.size, tiny_cfg.ingest.size, 3), dtype=torch.uint8)
    vectors, tokens = bag.featurize(frames)
    assert vectors.shape == (3, 32) and tokens.shape == (3, 4, 32)  # one still frame: no time axis left
    # a still clip is what the encoder sees: the same as feeding the repeated frame as a clip
    clip_vectors, _ = model.featurize(frames.expand(-1, tiny_cfg.ingest.clip_frames, -1, -1, -1))
    assert torch.allclose(vectors, clip_vectors.view(3, -1, 32).mean(1), atol=1e-5)
    fresh, again = reinitialised(encoder, 7), reinitialised(encoder, 7)
    trained = dict(encoder.named_parameters())
    for name, p in fresh.named_parameters():
        if torch.equal(p, trained[name]):  # only a norm's constant reset (ones, zeros) may equal the original
            assert "norm" in name and bool((p == p.flatten()[0]).all()), name
        assert torch.equal(p, dict(again.named_parameters())[name])  # seeded


def test_the_videomae_adapter_keeps_time_and_space(tiny_cfg):
    (model,) = external_models([HF], tiny_cfg.ingest.clip_frames, tiny_cfg.ingest.size, tiny_cfg.probe_eval.pool_grid)
    clips = torch.randint(0, 255, (2, tiny_cfg.ingest.clip_frames, tiny_cfg.ingest.size, tiny_cfg.ingest.size, 3),
                          dtype=torch.uint8)
    vectors, tokens = model.featurize(clips)
    t = tiny_cfg.ingest.clip_frames // 2  # tubelet 2
    assert vectors.shape == (2, t * 32) and tokens.shape == (2, t * tiny_cfg.probe_eval.pool_grid ** 2, 32)
    reversed_vectors, _ = model.featurize(clips.flip(1))
    assert not torch.allclose(vectors, reversed_vectors)  # time order survives into the probe vector


def test_contract_errors_are_one_line(tiny_cfg):
    for spec, words in (("no_colon", "package.module:factory"), ("videossl.nope:factory", "cannot import"),
                        ("tests.integration.test_evaluate:broken", "tokens [B, t, h, w, D] or vectors [B, F]")):
        with pytest.raises(ExternalEncoderError, match=words.replace("[", r"\[")):
            model, = external_models([spec], tiny_cfg.ingest.clip_frames, tiny_cfg.ingest.size, 2)
            model.featurize(torch.zeros(1, tiny_cfg.ingest.clip_frames, tiny_cfg.ingest.size, tiny_cfg.ingest.size, 3,
                                        dtype=torch.uint8))
