"""An objective through the real training loop end to end: JEPA on the tiny ingested dataset writes a
checkpoint that loads and resumes (its EMA target and predictor included)."""
from __future__ import annotations

import numpy as np
import torch

from tests.tiny import tiny_config
from videossl.data.shards import ClipStore
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
