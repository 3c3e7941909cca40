"""`pretrain.init_from`: the video encoder starts from a registered version, another run's checkpoint
or a published V-JEPA `.pth` of the same architecture; the source and its weights' digest are in the
run's identity, its exported checkpoint and the model card; another architecture is refused before
torchrun starts, naming what differs."""
from __future__ import annotations

import json

import pytest
import torch

from tests.tiny import tiny_config
from videossl.eval.scores import SCORED_WEIGHTS
from videossl.model_card import initialised_from
from videossl.models.checkpoint import load_checkpoint, load_encoder, state_digest
from videossl.steps.pretrain import PretrainError, pretrain
from videossl.steps.register import register

# two steps at a learning rate that moves no weight visibly: what comes out is what went in
BARELY = ("pretrain.steps=2", "pretrain.lr=1e-9", "pretrain.min_lr=0", "pretrain.warmup_steps=0", "pretrain.eval_every=0")


def _register(cfg, data, models, root, name: str) -> dict:
    ev = root / f"eval-{name}"
    ev.mkdir()
    video, _ = load_encoder(models / "encoder.pt")
    (ev / "scores.json").write_text(json.dumps({"temporal_score": {"video": 0.5, "frames": 0.0},
                                                 "dataset_digest": json.loads((data / "ingest.json").read_text())["digest"],
                                                 SCORED_WEIGHTS: {"video": state_digest(video.state_dict())}}))
    return register(cfg, data, models, ev, root / f"register-{name}")


def _vjepa_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """videossl's encoder weights under V-JEPA's key names, as its training checkpoint holds them."""
    out = {}
    for key, value in state.items():
        key = key.replace("patch_embed.", "patch_embed.proj.", 1).replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.2.", ".mlp.fc2.")
        out[f"module.{key}"] = value
    return out


def test_pretraining_starts_from_a_registered_version_and_records_it(tiny_data, tiny_models, tmp_path):
    start, _ = load_encoder(tiny_models / "encoder.pt")
    digest = state_digest(start.state_dict())
    reg = _register(tiny_config(tmp_path), tiny_data, tiny_models, tmp_path, "start")
    uri = f"models:/{reg['model_name']}@challenger"
    cfg = tiny_config(tmp_path, f"pretrain.init_from={uri}", *BARELY)
    out = tmp_path / "continued"
    pretrain(cfg, tiny_data, out, variants=("video",))
    ckpt = load_checkpoint(out / "encoder.pt")
    assert ckpt["result"]["init_from"] == {"from": uri, "kind": "registered", "sha256": digest}
    for name, tensor in start.state_dict().items():
        torch.testing.assert_close(ckpt["encoder"][name], tensor, rtol=0, atol=1e-5)
    (last,) = sorted((out / "checkpoints").rglob("step_*.pt"))[-1:]  # the run's identity names its start
    assert load_checkpoint(last)["spec"]["init"] == ckpt["result"]["init_from"]
    # the model card says where it started (the line register writes from the checkpoint's meta)
    _, meta = load_encoder(out / "encoder.pt")
    assert initialised_from(meta) == f"`{uri}` (registered, weights sha256 `{digest[:16]}`)"


def test_a_published_pth_of_the_same_architecture_initialises_and_another_is_refused_early(
        tiny_data, tiny_models, tmp_path):
    start, _ = load_encoder(tiny_models / "encoder.pt")
    path = tmp_path / "vjepa-tiny.pth.tar"
    layout = _vjepa_layout(start.state_dict())
    torch.save({"target_encoder": layout, "encoder": layout, "epoch": 1}, path)
    cfg = tiny_config(tmp_path, f"pretrain.init_from={path}", *BARELY)
    out = tmp_path / "from-pth"
    pretrain(cfg, tiny_data, out, variants=("video",))
    init = load_checkpoint(out / "encoder.pt")["result"]["init_from"]
    assert init["kind"] == "published" and init["layout"] == "vjepa"
    assert init["sha256"] == state_digest(start.state_dict())  # the same weights, read through V-JEPA's names

    wider = tiny_config(tmp_path, f"pretrain.init_from={tiny_models / 'encoder.pt'}", "model.dim=64", "model.heads=4")
    with pytest.raises(PretrainError, match=r"another architecture: dim \d+ \(this run: 64\)"):
        pretrain(wider, tiny_data, tmp_path / "refused", variants=("video",))
    assert not (tmp_path / "refused" / "encoder.pt").exists()
    with pytest.raises(PretrainError, match="pretrain.init_from: checkpoint not found: .*no-such.pt"):
        pretrain(tiny_config(tmp_path, f"pretrain.init_from={tmp_path / 'no-such.pt'}"), tiny_data, tmp_path / "x")
