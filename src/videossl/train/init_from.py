"""`pretrain.init_from`: the video encoder starts from weights instead of a random draw.

Three kinds of source, each checked against the encoder this run builds (its shape from `model` and
the data's clip shape) before any training:
- a videossl encoder checkpoint (another run's `encoder.pt`): its shape must be this run's;
- a registered version, `models:/<name>/<version>` or `models:/<name>@<alias>`, from the params'
  tracking store: its weights must be the ones its registration recorded (videossl.embed);
- a published V-JEPA or VideoMAE `.pth` (videossl.models.published), where its architecture is this
  run's (patch, tubelet, width, depth, MLP ratio; heads are the params'). Its position table and
  LayerNorm eps are not carried over: the encoder keeps videossl's own, and training adapts to them.

Only the encoder is initialised: an objective's heads, projection, decoder or predictor start as
always (and a JEPA's target encoder starts as the initialised encoder, as it would from random
weights). What was loaded is recorded: the source and its weights' sha256 go into the run's identity
(another file under the same name is another run), the exported checkpoint and the model card.
"""
from __future__ import annotations

import torch

from videossl.config import Config
from videossl.errors import StepError
from videossl.models.checkpoint import CheckpointError, ForeignCheckpointError, load_encoder, state_digest
from videossl.models.vit import VitShape

MODELS_URI = "models:/"
WEIGHT_FIELDS = ("frames", "img_size", "patch", "tubelet", "dim", "depth", "heads", "mlp_ratio")  # what fixes the weights' shapes


class InitError(StepError):
    pass


def _check(source: str, got: VitShape, want: VitShape, fields=WEIGHT_FIELDS) -> None:
    differ = [f"{f} {getattr(got, f)} (this run: {getattr(want, f)})" for f in fields if getattr(got, f) != getattr(want, f)]
    if differ:
        raise InitError(f"pretrain.init_from: {source} is another architecture: {', '.join(differ)}; set model.* "
                        f"and ingest.* to match it, or train from scratch (init_from: null)")


def initial_weights(cfg: Config, shape: VitShape) -> tuple[dict[str, torch.Tensor], dict]:
    """The video encoder's initial state_dict for `shape` from `cfg.pretrain.init_from`, and its record
    ({"from", "kind", "sha256"[, "layout"]})."""
    source = cfg.pretrain.init_from
    if source.startswith(MODELS_URI):
        from videossl.embed import EmbedError, load_encoder as load_registered
        from videossl.tracking import tracking_uri

        try:
            model = load_registered(source, tracking_uri(cfg.tracking)).model
        except EmbedError as e:
            raise InitError(f"pretrain.init_from: {e}") from None
        kind, extra = "registered", {}
    else:
        try:
            model, _ = load_encoder(source)
            kind, extra = "videossl", {}
        except ForeignCheckpointError:
            from videossl.models.published import PublishedCheckpointError, load_published

            try:
                model, info = load_published(source, shape.frames, shape.img_size, shape.heads)
            except PublishedCheckpointError as e:
                raise InitError(f"pretrain.init_from: {e}") from None
            kind, extra = "published", {"layout": info["layout"], "positions": "videossl's (the checkpoint's table "
                                        "and LayerNorm eps are not carried over)"}
        except CheckpointError as e:
            raise InitError(f"pretrain.init_from: {e}") from None
    _check(source, model.shape, shape)
    state = model.state_dict()
    return state, {"from": source, "kind": kind, "sha256": state_digest(state), **extra}
