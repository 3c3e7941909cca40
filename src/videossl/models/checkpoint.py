"""Self-describing checkpoints, written atomically, holding tensors and plain values only (loaded
without running any code from the file).

Two kinds: the training checkpoints (train/checkpointing.py: the whole objective, optimizer, RNG and
step, to resume) and the exported model (`encoder.pt`, `export_state`): the encoder's weights, its
shape, the config that made them (`export_config`), the dataset digest and the step, and the
objective's own parameters (pretext heads, projection, decoder, predictor, EMA target: without the
shared encoder) so its heads can be scored zero-shot (eval/objective_heads.py); nothing about how the
run went (no optimizer, RNG). An exported model alone is enough to rebuild its encoder
(`load_encoder`, which ignores the objective), so probe-eval, the registry and a user in a notebook
need nothing but the file. The run's timings go beside it
(`timings_path`), so equal weights give equal bytes.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import torch

from videossl import storage
from videossl.config import ModelConfig
from videossl.models.digest import state_digest  # noqa: F401  (re-exported: callers import it from here)
from videossl.models.vit import VideoViT, VitShape
from videossl.errors import StepError

FORMAT = "videossl.checkpoint/1"
# variant -> file name: the video model, and the frame encoder (T=1) of the bag-of-frames baseline
CHECKPOINTS = {"video": "encoder.pt", "frames": "frame_encoder.pt"}
RECORD = "pretrain.json"  # beside them: each variant's result (steps, loss, size, weights' digest); stages.py says why three files


class CheckpointError(StepError):
    pass


class ForeignCheckpointError(CheckpointError):
    """A readable weights file, but not one videossl wrote (a published checkpoint, for example)."""


def export_config(cfg) -> dict:
    """What the exported model records of its config: what decides the weights (seed, model, the
    objective's settings) and the preprocessing a user must repeat (ingest's fps, size, decoder);
    not the knobs of how the run executed (train/checkpointing.OPERATIONAL), nor paths or servers."""
    from videossl.train.checkpointing import OPERATIONAL

    full = cfg.model_dump(mode="json")
    return {"seed": full["seed"], "model": full["model"],
            "pretrain": {k: v for k, v in full["pretrain"].items() if k not in OPERATIONAL},
            "ingest": {k: full["ingest"][k] for k in PREPROCESSING}}


# ingest keys a user repeats to feed the model what it was trained on (embed.Encoder reads them)
PREPROCESSING = ("fps", "size", "clip_frames", "decoder")


def shared_encoder_paths(objective) -> list[str]:
    """Every module path at which the objective reaches its one shared encoder: "encoder", and again
    inside each part ("pretext.encoder", "parts.mae.encoder", ...), so `state_dict()` lists the
    encoder's tensors once per path. A separate copy (JEPA's EMA `target`) is another module: not listed."""
    return [name for name, m in objective.named_modules(remove_duplicate=False) if m is objective.encoder]


def objective_state(objective) -> dict[str, torch.Tensor]:
    """The objective's own tensors: its state_dict less every alias of the shared encoder."""
    shared = tuple(f"{p}." for p in shared_encoder_paths(objective))
    return {k: v for k, v in objective.state_dict().items() if not k.startswith(shared)}


def full_state(objective, encoder: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of (encoder.state_dict(), objective_state): the objective's whole state_dict, the
    encoder's tensors under each of its paths, for a strict load_state_dict."""
    out = {f"{p}.{k}": v for p in shared_encoder_paths(objective) for k, v in encoder.items()}
    return {**out, **own}


def export_state(cfg, variant: str, objective, *, dataset_digest: str, step: int, loss: float, result: dict) -> dict:
    """The exported model's dict (`save_checkpoint` adds the format): what the weights are and what
    they mean, nothing of how the run went (optimizer, RNG and timings stay out), so equal weights
    give equal bytes and DVC and the feature cache see no change where there is none."""
    return {"variant": variant, "shape": objective.encoder.shape.as_dict(), "config": export_config(cfg),
            "dataset_digest": dataset_digest, "step": step, "loss": loss,
            "encoder": objective.encoder.state_dict(), "objective": objective_state(objective), "result": result}


def timings_path(dest: str | os.PathLike) -> str:
    """Where a training run writes its timings, beside the exported model (`encoder.pt` ->
    `encoder.timings.json`)."""
    return str(dest)[: -len(".pt")] + ".timings.json" if str(dest).endswith(".pt") else f"{dest}.timings.json"


def encoder_shape(model: ModelConfig, variant: str, clip_frames: int, img_size: int) -> VitShape:
    frames, tubelet = (clip_frames, model.tubelet) if variant == "video" else (1, 1)
    return VitShape(frames=frames, img_size=img_size, patch=model.patch, tubelet=tubelet, dim=model.dim,
                    depth=model.depth, heads=model.heads, mlp_ratio=model.mlp_ratio, causal_time=model.causal_time)


def save_checkpoint(state: dict, dest: str | os.PathLike) -> str:
    """torch.save to a temp file (fsynced), then rename (local) or a completed upload (s3): a kill or
    a power cut at any moment leaves either the old file or the complete new one, never half a file."""
    state = {"format": FORMAT, **state}
    if storage.is_s3(dest):
        with tempfile.TemporaryDirectory(prefix="videossl-upload-") as tmp_dir:
            tmp = Path(tmp_dir) / Path(str(dest)).name
            torch.save(state, tmp)
            storage.upload(tmp, str(dest))
        return str(dest)
    with storage.atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(Path(dest).parent)  # the rename itself survives a power cut
    return str(dest)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(src: str | os.PathLike) -> dict:
    """A checkpoint's dict. Loaded with weights_only=True: tensors, containers and plain values only,
    so a crafted file cannot run code (torch's restricted unpickler refuses every other global)."""
    try:
        if storage.is_s3(src):  # with the store's retries, and a check that the whole body arrived
            state = torch.load(io.BytesIO(storage.read_bytes(str(src))), map_location="cpu", weights_only=True)
        else:
            if not Path(src).is_file():
                raise CheckpointError(f"checkpoint not found: {src}")
            state = torch.load(src, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"checkpoint {src} is unreadable or corrupt: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ForeignCheckpointError(f"{src} is not a videossl checkpoint (format {FORMAT} expected)")
    return state


def check_recorded(path: str | os.PathLike, digest: str) -> None:
    """The encoder checkpoint at `path` holds the weights its pretraining recorded beside it (RECORD,
    written with them): a swapped or edited file is refused, naming both digests. A checkpoint without
    the record beside it (weights from elsewhere) has nothing to check against."""
    path = Path(path)
    record = path.parent / RECORD
    variant = next((v for v, name in CHECKPOINTS.items() if name == path.name), None)
    if variant is None or not record.is_file():
        return
    expected = (json.loads(record.read_text()).get(variant) or {}).get("encoder_sha256")
    if expected and expected != digest:
        raise CheckpointError(f"{path} holds weights sha256 {digest}, but its pretraining recorded {expected} "
                              f"({record}): not the weights that run trained; refusing them")


def load_encoder(src: str | os.PathLike) -> tuple[VideoViT, dict]:
    """The frozen encoder of a checkpoint (eval mode) and its metadata (everything but the weights)."""
    state = load_checkpoint(src)
    encoder = VideoViT(VitShape(**state["shape"]))
    encoder.load_state_dict(state["encoder"])
    encoder.eval()
    meta = {k: v for k, v in state.items() if k not in ("encoder", "objective", "optimizer", "rng")}
    meta.update(num_frames=encoder.shape.frames, img_size=encoder.shape.img_size, model=state["shape"])
    return encoder, meta
