"""Embed any video with a trained encoder: `videossl embed` and `load_encoder(uri).embed(video)`.

The embedding is the benchmark's primary vector: each clip's tokens pooled over space and
concatenated in time order ([time slices x dim]). It keeps the order of time, so a clip and its
reverse embed differently; a plain mean over all tokens would not (that is the bag of frames).

Videos are decoded exactly as ingest does (same decoder, resampled to the training fps, short side
scaled to the training size, centre-cropped) and cut into clips of the training length every
`stride` frames. Input of another size or length than the encoder's is refused in one line that
names the expected shape (position embeddings are fixed at training time).

    from videossl.embed import load_encoder
    enc = load_encoder("models:/videossl-encoder@champion", tracking_uri="sqlite:///mlruns.db")
    emb = enc.embed("clip.mp4")          # emb.vectors [n_clips, T' * D], emb.clips [{source, start_s, end_s}]

Any encoder behind `videossl evaluate`'s contract embeds the same way (`load_external`, `videossl embed
--encoder package.module:factory[=arg]`): videos decoded at the params' ingest.fps and ingest.size, cut
into clips of ingest.clip_frames, and the vector the benchmark's probes read of it.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch

from videossl.clip_embedder import ClipEmbedder
from videossl.config import IngestConfig
from videossl.data.decode import Limits, decode_video, make_decoder
from videossl.data.sources import VIDEO_EXTENSIONS
from videossl.errors import StepError
from videossl.models.vit import VideoViT
from videossl.storage import write_text_atomic

if TYPE_CHECKING:
    from videossl.config import Config

CHECKPOINT_ARTIFACT = "checkpoint/encoder.pt"  # where register logs the checkpoint beside the MLflow model
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


class EmbedError(StepError):
    pass


@dataclass
class Embedding:
    vectors: np.ndarray                       # [n_clips, time slices x dim], float32, time order kept
    clips: list[dict] = field(default_factory=list)  # per row: source, start_s, end_s


class Encoder:
    """A frozen encoder with the preprocessing it was trained with: `embedder` takes uint8 clips
    [B, clip_frames, size, size, 3] and returns one vector per clip."""

    def __init__(self, embedder: Callable[[torch.Tensor], torch.Tensor], clip_frames: int, size: int, fps: float,
                 decoder: str, meta: dict, model: VideoViT | None = None):
        self.embedder, self.model, self.meta = embedder, model, meta
        self.clip_frames, self.size, self.fps, self.decoder = clip_frames, size, float(fps), decoder
        self.limits = Limits.of(IngestConfig())  # what a video may be (ingest's defaults): refused unread beyond

    @classmethod
    def of_checkpoint(cls, model: VideoViT, meta: dict) -> "Encoder":
        """videossl's encoder at the fps and decoder its training data was ingested with."""
        ingest = (meta.get("config") or {}).get("ingest", {})
        model = model.eval()
        return cls(ClipEmbedder(model), model.shape.frames, model.shape.img_size, float(ingest.get("fps", 8.0)),
                   str(ingest.get("decoder", "auto")), meta, model)

    @property
    def expected(self) -> str:
        return f"uint8 frames [T >= {self.clip_frames}, {self.size}, {self.size}, 3]"

    def embed_clips(self, clips: np.ndarray, batch: int = 64) -> np.ndarray:
        """uint8 clips [N, clip_frames, size, size, 3] -> [N, F] time-ordered vectors (the registered
        model's forward, `ClipEmbedder`)."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(clips), batch):
                try:
                    out.append(self.embedder(torch.from_numpy(np.ascontiguousarray(clips[i:i + batch]))).numpy())
                except ValueError as e:
                    raise EmbedError(str(e)) from None
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def frames_of(self, video: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, str]:
        if isinstance(video, np.ndarray):
            if video.ndim != 4 or video.shape[1:] != (self.size, self.size, 3) or video.dtype != np.uint8 \
                    or len(video) < self.clip_frames:
                raise EmbedError(f"an array of shape {video.shape} ({video.dtype}): this encoder takes {self.expected}")
            return video, "<array>"
        frames, _ = decode_video(Path(video), make_decoder(self.decoder), self.fps, self.size, self.limits)
        if len(frames) < self.clip_frames:
            raise EmbedError(f"{video}: {len(frames)} frames at {self.fps:g} fps, one clip needs {self.clip_frames}")
        return frames, str(video)

    def embed(self, video: str | os.PathLike | np.ndarray, stride: int | None = None) -> Embedding:
        """One vector per clip of `video` (a file, or frames already at the training fps and size)."""
        frames, source = self.frames_of(video)
        stride = stride or self.clip_frames
        starts = list(range(0, len(frames) - self.clip_frames + 1, stride))
        clips = np.stack([frames[s:s + self.clip_frames] for s in starts])
        spans = [{"source": source, "start_s": round(s / self.fps, 4),
                  "end_s": round((s + self.clip_frames) / self.fps, 4)} for s in starts]
        return Embedding(self.embed_clips(clips), spans)


@contextmanager
def checkpoint_file(uri: str, tracking_uri: str | None = None) -> Iterator[tuple[Path, str | None]]:
    """(a local checkpoint path, the weights' digest its registration recorded) for `uri` while the
    block runs: a file (no registration: None), or a registered version (models:/name/3,
    models:/name@alias) whose registration logged the checkpoint (CHECKPOINT_ARTIFACT), downloaded
    to a temporary folder that is removed afterwards."""
    match = _MODELS_URI.match(uri)
    if not match:
        path = Path(uri)
        if not path.is_file():
            raise EmbedError(f"{uri}: neither a checkpoint file nor models:/<name>/<version> | models:/<name>@<alias>")
        yield path, None
        return
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from videossl import local_store, tracking
    from videossl.registered_model import registered_digest

    store = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if store:
        store = tracking.reader_uri(store)  # a copied checkout reads its own artifacts
        db = local_store.sqlite_file(store)
        if db is not None and not db.is_file():  # opening it would create an empty store
            raise EmbedError(f"{uri}: no MLflow store at {db} (--tracking-uri or MLFLOW_TRACKING_URI)")
    where = store or "MLflow's default store"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    with tempfile.TemporaryDirectory(prefix="videossl-embed-") as dest:
        try:
            name = match["name"]
            mv = (client.get_model_version(name, match["version"]) if match["version"]
                  else client.get_model_version_by_alias(name, match["alias"]))
        except MlflowException as e:
            raise EmbedError(f"{uri} in {where}: {str(e).splitlines()[0]}") from None
        try:
            path = Path(client.download_artifacts(mv.run_id, CHECKPOINT_ARTIFACT, dest))
            registered = registered_digest(mv.run_id, client)
        except (MlflowException, OSError) as e:
            looked = f"{client.get_run(mv.run_id).info.artifact_uri.rstrip('/')}/{CHECKPOINT_ARTIFACT}"
            raise EmbedError(f"{uri} in {where}: the checkpoint is not at {looked} ({str(e).splitlines()[0]})") from None
        yield path, registered


def load_encoder(uri: str, tracking_uri: str | None = None) -> Encoder:
    """The encoder of a checkpoint file or a registered version; a registered version's weights must
    be the ones its registration recorded (EmbedError naming both digests otherwise)."""
    from videossl.models.checkpoint import CheckpointError, check_recorded, state_digest
    from videossl.models.checkpoint import load_encoder as load

    try:
        with checkpoint_file(uri, tracking_uri) as (path, registered):
            model, meta = load(path)
            if registered is None:  # a local file: the digest its pretraining recorded beside it, where there is one
                check_recorded(path, state_digest(model.state_dict()))
    except CheckpointError as e:
        raise EmbedError(str(e)) from None
    if registered is not None and (actual := state_digest(model.state_dict())) != registered:
        raise EmbedError(f"{uri}: its checkpoint holds weights sha256 {actual}, but its registration recorded "
                         f"{registered}: these are not the registered weights; refusing to load them")
    return Encoder.of_checkpoint(model, meta)


def load_external(spec: str, cfg: "Config") -> Encoder:
    """Any encoder behind evaluate's contract (videossl.eval.external), fed clips of the params' ingest
    shape (clip_frames at fps, size), embedded as the benchmark's probes read it."""
    from videossl.eval.external import ExternalEncoderError, external_models

    ingest = cfg.ingest
    try:
        (model,) = external_models([spec], ingest.clip_frames, ingest.size, cfg.probe_eval.pool_grid)
    except ExternalEncoderError as e:
        raise EmbedError(str(e)) from None
    return Encoder(lambda clips: model.featurize(clips)[0], ingest.clip_frames, ingest.size, ingest.fps, ingest.decoder,
                   {"encoder": spec})


def video_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise EmbedError(f"{item}: no such file or directory")
    if not files:
        raise EmbedError(f"no video files in {[str(i) for i in inputs]} (extensions {', '.join(VIDEO_EXTENSIONS)})")
    return files


def embed_files(encoder: Encoder, inputs: Iterable[str | os.PathLike], out: str | os.PathLike,
                stride: int | None = None, progress: Callable[[Iterable], Iterable] = lambda x: x) -> dict:
    """Embed every video under `inputs`; writes `<out>.npy` (vectors) and `<out>.json` (one entry per
    row: source, start_s, end_s, plus the encoder's contract). Unreadable videos are listed, not fatal."""
    from videossl.data.decode import DecodeError

    vectors, clips, failed = [], [], []
    for path in progress(video_files(inputs)):
        try:
            emb = encoder.embed(path, stride)
        except (DecodeError, EmbedError, OSError) as e:
            failed.append({"source": str(path), "reason": str(e).splitlines()[0]})
            continue
        vectors.append(emb.vectors)
        clips += emb.clips
    if not vectors:
        raise EmbedError(f"no video could be embedded: {failed}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    matrix = np.concatenate(vectors)
    np.save(out.with_suffix(".npy"), matrix)
    index = {"vectors": out.with_suffix(".npy").name, "shape": list(matrix.shape),
             "layout": "per clip: tokens pooled over space, time slices concatenated in order",
             "clip_frames": encoder.clip_frames, "fps": encoder.fps, "size": encoder.size,
             "clips": clips, "failed": failed}
    write_text_atomic(out.with_suffix(".json"), json.dumps(index, indent=1) + "\n")
    return index
