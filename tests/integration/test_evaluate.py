"""`videossl evaluate --encoder`: any encoder on the full temporal suite, beside this project's model
and every baseline, in one report; the Hugging Face VideoMAE adapter on a randomly initialised
model (no hub download); a vector-only encoder; contract errors in one line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.tiny import tiny_params_yaml
from videossl.eval.external import ExternalEncoderError, external_models, name_of
from videossl.eval.scores import MODELS

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
