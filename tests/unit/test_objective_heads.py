"""The exported model keeps the objective's own parameters (not a second copy of the encoder), and
eval/objective_heads.py rebuilds the objective from it and runs its pretext heads zero-shot."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny import tiny_config
from videossl import objectives
from videossl.data.transforms import to_model_input
from videossl.eval.objective_heads import load_objective, pretext_heads, pretext_predictions
from videossl.models.checkpoint import (CheckpointError, encoder_shape, export_state, load_checkpoint,
                                        load_encoder, save_checkpoint)
from videossl.models.vit import VideoViT
from videossl.objectives.pretext_contrastive import PretextContrastive


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def export(tmp_path, *extra: str, name: str = "encoder.pt"):
    """An objective built as pretrain builds it, its heads moved off their init, exported as loop.py does."""
    cfg = tiny_config(tmp_path, *extra)
    torch.manual_seed(0)
    shape = encoder_shape(cfg.model, "video", cfg.ingest.clip_frames, cfg.ingest.size)
    objective, _ = objectives.build(cfg, VideoViT(shape), "video")
    with torch.no_grad():  # heads start at std 0.01 and zero bias: make them decisive
        for p in objective.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    path = tmp_path / name
    save_checkpoint(export_state(cfg, "video", objective, dataset_digest="d", step=4, loss=1.0,
                                 result={"steps": 4}), path)
    return cfg, objective.eval(), path


def clips(cfg, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, cfg.ingest.clip_frames, cfg.ingest.size, cfg.ingest.size, 3),
                         dtype=torch.uint8, generator=g)


def test_export_keeps_the_objective_without_encoder_copies(tmp_path):
    cfg, objective, path = export(tmp_path)
    assert isinstance(objective, PretextContrastive)  # the default objective
    state = load_checkpoint(path)
    assert not {"optimizer", "rng", "scaler"} & set(state)
    own = state["objective"]
    # each part holds the shared encoder too (pretext.encoder.*, contrastive.encoder.*): none of it is saved
    assert own and not any(k.startswith("encoder.") or ".encoder." in k for k in own)
    assert {k.split(".")[0] for k in own} == {"pretext", "contrastive"}
    encoder, meta = load_encoder(path)  # unchanged: the objective is extra, and not in the metadata
    assert "objective" not in meta and "encoder" not in meta
    for k, v in objective.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[k], v)


def test_heads_round_trip_and_predict_as_the_original(tmp_path):
    cfg, original, path = export(tmp_path)
    loaded, info = load_objective(path)
    assert not loaded.training and info.variant == "video" and info.step == 4
    assert info.speeds == sorted(cfg.pretrain.pretext.speeds) and info.tasks
    heads, before = pretext_heads(loaded), pretext_heads(original)
    assert set(heads) == set(before) == set(info.tasks)
    for task in heads:
        assert torch.equal(heads[task].weight, before[task].weight)
        assert torch.equal(heads[task].bias, before[task].bias)
    for k, v in original.state_dict().items():  # everything else too (projection, encoder)
        assert torch.equal(loaded.state_dict()[k], v), k

    x = clips(cfg, 5)
    got = pretext_predictions(loaded, x, batch=2)  # batches of 2, 2, 1
    with torch.inference_mode():
        feats = original.encoder.embed_time(to_model_input(x)).flatten(1)
        want = {t: h(feats).argmax(1).numpy() for t, h in before.items()}
    assert set(got) == set(want)
    for task in got:
        assert got[task].shape == (5,) and got[task].dtype == np.int64
        np.testing.assert_array_equal(got[task], want[task])
    assert got["speed"].max() < len(info.speeds)


def test_combined_objective_finds_its_pretext_part(tmp_path):
    _, original, path = export(tmp_path, "pretrain.objective={mae: 1.0, pretext: 0.5}")
    loaded, info = load_objective(path)
    heads = pretext_heads(loaded)
    assert heads is not None and set(heads) == set(info.tasks)
    assert all(torch.equal(heads[t].weight, pretext_heads(original)[t].weight) for t in heads)


def test_jepa_keeps_its_target_encoder(tmp_path):
    _, original, path = export(tmp_path, "pretrain.objective=jepa")
    own = load_checkpoint(path)["objective"]
    assert any(k.startswith("target.") for k in own) and any(k.startswith("predictor.") for k in own)
    loaded, _ = load_objective(path)
    for k, v in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert pretext_heads(loaded) is None


@pytest.mark.parametrize("objective", ["mae", "contrastive"])
def test_objective_without_pretext_has_no_heads(tmp_path, objective):
    _, _, path = export(tmp_path, f"pretrain.objective={objective}")
    loaded, info = load_objective(path)
    assert pretext_heads(loaded) is None and info.speeds is None
    with pytest.raises(ValueError, match="no pretext heads"):
        pretext_predictions(loaded, torch.zeros(1, 1, 1, 1, 3, dtype=torch.uint8), batch=1)


def test_older_export_without_objective_is_refused(tmp_path):
    _, _, path = export(tmp_path)
    state = load_checkpoint(path)
    del state["objective"], state["format"]
    save_checkpoint(state, path)
    load_encoder(path)  # still a fine encoder
    with pytest.raises(CheckpointError, match="exported before objective heads were saved; re-run pretrain"):
        load_objective(path)
