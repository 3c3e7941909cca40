"""An objective through the real training loop end to end: JEPA on the tiny ingested dataset writes a
checkpoint that loads and resumes (its EMA target and predictor included), and whose predictor
probe-eval reads zero-shot as surprise."""
from __future__ import annotations

import numpy as np
import torch

from tests.tiny import tiny_config
from videossl.data.shards import BENCHMARK, ClipStore
from videossl.eval.benchmark import surprise_scores
from videossl.eval.objective_heads import load_objective
from videossl.eval.report import kind_table
from videossl.eval.scores import MODELS
from videossl.eval.stats import VideoBootstrap
from videossl.eval.tasks import HELD_OUT, build_tasks
from videossl.models.checkpoint import load_checkpoint, load_encoder
from videossl.train.loop import train


# ---------------------------------------------------------------------------------------------
# end to end


def test_jepa_pretraining_end_to_end_writes_a_loadable_checkpoint(tmp_path, tiny_data, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    cfg = tiny_config(tmp_path, "pretrain.objective=jepa", "pretrain.steps=3", "pretrain.threads=1")
    out = tmp_path / "encoder.pt"
    result = train(cfg, tiny_data, str(out), "video")
    assert result["steps"] == 3 and np.isfinite(result["final_loss"])
    encoder, meta = load_encoder(out)
    assert meta["variant"] == "video" and meta["num_frames"] == ClipStore(tiny_data).clip_frames
    (last,) = sorted((tmp_path / "checkpoints").glob("video-*/step_*.pt"))[-1:]
    state = load_checkpoint(last)
    assert any(k.startswith("target.") for k in state["objective"])  # the EMA target is saved for a resume
    assert any(k.startswith("predictor.") for k in state["objective"])
    with torch.no_grad():
        x = torch.randn(1, 3, meta["num_frames"], meta["img_size"], meta["img_size"])
        assert torch.isfinite(encoder(x)).all()
    # its predictor reads the matched held-out tasks zero-shot, as probe-eval scores them
    store = ClipStore(tiny_data)
    tasks = build_tasks(store, ["permanence", "gravity_law"], cfg.probe_eval.speeds, 2, cfg.ingest.synthetic.max_objects)
    boot = VideoBootstrap([v.source_id for v in store.videos_in("test", BENCHMARK)], 50, 0)
    objective, _ = load_objective(out)
    read = surprise_scores(objective, store, tasks, 16, boot)
    assert set(read) == {"permanence"}  # a matched task; gravity_law has classes, not sets
    s = read["permanence"]
    for key in ("video_surprise", "held_frame_surprise"):  # the predictor, and the last seen frame held beside it
        assert 0 <= s[key + "_ci_low"] <= s[key] <= s[key + "_ci_high"] <= 1
    table = kind_table({"tasks": {"permanence": s}}, MODELS, HELD_OUT)
    assert "surprise, zero-shot" in table and f"{s['video_surprise']:.3f}" in table
    assert "last frame held's surprise" in table and f"{s['held_frame_surprise']:.3f}" in table
