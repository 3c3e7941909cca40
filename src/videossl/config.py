"""One pydantic tree that mirrors params.yaml, validated before any step does work.

Every knob lives in params.yaml; this module only says what is allowed. A bad value is reported
as `ConfigError` naming the dotted key (e.g. `ingest.fps`) and what the key accepts, so the CLI
can exit non-zero before a single video is decoded. What a knob means is written once, beside it in
params.yaml; the defaults here equal params.yaml's values (tests/unit/test_config.py compares the whole tree).
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_serializer, model_validator)

from videossl import secrets
from videossl.eval import scores


class ConfigError(ValueError):
    """Invalid params: the message names the key and what is allowed."""


def distinct(what: str):
    """A validator: the list has no repeats (a repeated task, probe or head would be scored twice)."""
    def check(values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"{what} must be distinct")
        return values
    return check


def distinct_speeds(speeds: list[int]) -> list[int]:
    """Playback speeds (frame steps): distinct integers >= 1, sorted."""
    if any(s < 1 for s in speeds) or len(set(speeds)) != len(speeds):
        raise ValueError("speeds must be distinct integers >= 1")
    return sorted(speeds)


class Section(BaseModel):
    # extra="forbid": a typo in params.yaml is an error, not a silently ignored knob.
    # allow_inf_nan=False: YAML's .nan / .inf are numbers to YAML, never a usable setting here.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value, info):
        # YAML's true/false are ints to pydantic's lax mode (steps: true would train 1 step)
        field = cls.model_fields.get(info.field_name)
        if isinstance(value, bool) and field is not None and field.annotation in (int, float, int | None, float | None):
            raise ValueError("a number is needed, not true/false")
        return value


S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's bucket naming rules (the short form)


def http_url(value: str | None) -> str | None:
    """An http(s) URL with a host and, if given, a valid port; None passes (unset)."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    if any(c.isspace() for c in value):
        raise ValueError("a URL has no whitespace")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host (e.g. http://host:port)")
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in 0-65535)
    except ValueError:
        raise ValueError("the URL's port is not a number in 0-65535") from None
    return value


def no_credentials(carrier: str):
    """A validator: a URL param (or a list of them) that holds credentials is refused, naming where
    they go instead; written into params, they would reach the compiled pipeline, config.yaml, every
    checkpoint and the logs."""
    def check(value):
        for v in value if isinstance(value, list) else [value]:
            what = secrets.credentials_in(v) if isinstance(v, str) else None
            if what:
                raise ValueError(f"holds credentials ({what}); params are written to the compiled pipeline, "
                                 f"config.yaml, checkpoints and logs: give them through {carrier}, never in a URL")
        return value
    return check


S3_CREDENTIALS = ("the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; on the cluster the Secret "
                  "cluster.secrets.s3)")


def s3_uri(value: str | None) -> str | None:
    """s3://bucket[/prefix] with a valid bucket name; anything else passes (a local path)."""
    if value is None or not value.startswith("s3://"):
        return value
    bucket = value[len("s3://"):].split("/", 1)[0]
    if not S3_BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    return value


def host_port(value: str | None) -> str | None:
    """host:port (an optional http(s):// in front), the form prometheus_client pushes to."""
    if value is None:
        return None
    bare = value.split("://", 1)[1] if value.startswith(("http://", "https://")) else value
    host, _, port = bare.rstrip("/").rpartition(":")
    if not host or any(c.isspace() or c in "/@" for c in host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("not host:port (e.g. pushgateway.monitoring:9091)")
    return value


def tracking_store(value: str | None) -> str | None:
    """An MLflow store URI: scheme:... (sqlite:///file, http(s)://host, postgresql://..., file:...)."""
    if value is None:
        return None
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value) or any(c.isspace() for c in value):
        raise ValueError("not a store URI (sqlite:///mlruns.db, http://mlflow:5000, ...)")
    if value.startswith(("http://", "https://")):
        http_url(value)
    return value


def split_fractions(splits: dict[str, float]) -> dict[str, float]:
    """train/val/test shares: exactly those three names, finite, >= 0, summing to 1, train and test > 0."""
    if set(splits) != {"train", "val", "test"}:
        raise ValueError("splits needs exactly train, val and test")
    if any(not math.isfinite(v) or v < 0 for v in splits.values()) or abs(sum(splits.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1 (got {dict(splits)})")
    if splits["train"] <= 0 or splits["test"] <= 0:
        raise ValueError("train and test fractions must be > 0")
    return splits


# the default worlds (params.yaml repeats them): videos per scene family
BENCHMARK_FAMILIES = {"bounce": 288, "permanence": 240, "continuity": 240, "shape_constancy": 240, "future": 240,
                      "causality": 240, "dye": 120, "reversible": 120}
POOL_FAMILIES = {"bounce": 450, "glide": 300, "launch": 150}


def scene_families(families: dict[str, int], natural_only: bool) -> dict[str, int]:
    """Video counts per scene family (videossl.data.synthetic.families): known names, counts >= 0; the
    pretraining pool takes natural families only (a probe family's labels must never be trained on)."""
    from videossl.data.synthetic.families import FAMILIES, NATURAL

    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown scene families {unknown} (known: {', '.join(FAMILIES)})")
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in families.values()):
        raise ValueError("each family's count must be an integer >= 0")
    if natural_only:
        probes = sorted(set(families) - set(NATURAL))
        if probes:
            raise ValueError(f"{probes} build the benchmark's questions (impossible or counterfactual videos, a "
                             f"held-out process): the pretraining pool takes natural families only ({', '.join(NATURAL)})")
    return families


class BenchmarkWorldConfig(Section):
    """The evaluation world: videos per scene family, split within each family's design cells."""
    seed: int = 1
    splits: dict[Literal["train", "val", "test"], float] = Field(
        default_factory=lambda: {"train": 0.4, "val": 0.2, "test": 0.4})
    families: dict[str, int] = Field(default_factory=lambda: dict(BENCHMARK_FAMILIES))

    _splits = field_validator("splits")(lambda s: split_fractions(s))
    _families = field_validator("families")(lambda f: scene_families(f, natural_only=False))


class PoolWorldConfig(Section):
    """The pretraining world: natural families from their own seed; never evaluated on."""
    seed: int = 0
    val_fraction: float = Field(0.05, ge=0, lt=1)
    families: dict[str, int] = Field(default_factory=lambda: dict(POOL_FAMILIES))

    _families = field_validator("families")(lambda f: scene_families(f, natural_only=True))


class SyntheticConfig(Section):
    """The built-in physics world (videossl.data.synthetic): two worlds drawn from one physics."""

    benchmark: BenchmarkWorldConfig = BenchmarkWorldConfig()
    pool: PoolWorldConfig = PoolWorldConfig()
    seconds: float = Field(5.0, gt=0, le=60)
    fps: int = Field(8, ge=1, le=120)
    size: int = Field(32, ge=16, le=1024, multiple_of=2)
    max_objects: int = Field(3, ge=1, le=8)
    gop: int = Field(8, ge=1, le=250)
    crf: int = Field(0, ge=0, le=51)
    workers: int = Field(2, ge=0, le=64)


class H264Config(Section):
    """How `ingest.shard_format: h264` encodes each video (libx264, yuv420p, data/encode.h264_bytes)."""

    crf: int = Field(18, ge=0, le=51)  # x264's quality scale: 0 lossless, 18 visually lossless, 23 its default
    gop: int = Field(16, ge=1, le=250)  # frames between keyframes: a window decodes from the keyframe before it


class IngestConfig(Section):
    sources: list[str] = Field(default_factory=lambda: ["synthetic", "samples"], min_length=1)
    s3_endpoint_url: str | None = None
    decoder: Literal["auto", "decord", "pyav"] = "auto"
    fps: float = Field(8.0, gt=0, le=120)
    size: int = Field(32, ge=8, le=1024)
    clip_frames: int = Field(8, ge=2, le=256)
    clip_stride: int = Field(4, ge=1)
    splits: dict[Literal["train", "val", "test"], float] = Field(
        default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    shard_frames: int = Field(4096, ge=1)
    shard_format: str = "npy"  # one of data/shards.SHARD_FORMATS
    h264: H264Config = H264Config()
    chunk_videos: int = Field(4096, ge=1)
    max_quarantined_fraction: float = Field(0.5, ge=0, le=1)
    workers: int = Field(2, ge=0, le=64)
    pushgateway: str | None = None
    synthetic: SyntheticConfig = SyntheticConfig()

    # What one video may be, read from its header before any frame is decoded (data/decode.Limits): beyond,
    # it is quarantined unread. With frames decoded and cropped in chunks, these bound a decoder's memory.
    max_frame_pixels: int = Field(7680 * 4320, ge=1)   # 8K UHD
    max_seconds: float = Field(3600.0, gt=0)
    max_frames: int = Field(500_000, ge=1)
    _endpoint = field_validator("s3_endpoint_url")(lambda v: http_url(no_credentials(S3_CREDENTIALS)(v)))
    _pushgateway = field_validator("pushgateway")(lambda v: host_port(v))

    @field_validator("shard_format")
    @classmethod
    def _shard_format(cls, fmt: str) -> str:
        from videossl.data.shards import SHARD_FORMATS

        if fmt not in SHARD_FORMATS:
            raise ValueError(f"{fmt!r} is not one of {', '.join(SHARD_FORMATS)}")
        return fmt
    _secrets = field_validator("sources")(lambda v: no_credentials(S3_CREDENTIALS)(v))

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, sources: list[str]) -> list[str]:
        for s in sources:
            if not s or not isinstance(s, str):
                raise ValueError("each source is 'synthetic', 'samples', list:|ssv2:|kinetics:<file>, a local directory "
                                 "or s3://bucket/prefix")
            if s.startswith("s3://") and len(s) <= len("s3://"):
                raise ValueError(f"source {s!r}: an s3 source needs a bucket (s3://bucket/prefix)")
            from videossl.data.lists import PREFIXES  # their one home (imported late: it imports config)

            if s in PREFIXES:
                raise ValueError(f"source {s!r}: a labelled source names its file ({s}path/to/file, local or s3://)")
        return sources

    _splits = field_validator("splits")(lambda s: split_fractions(s))

    @model_validator(mode="after")
    def _h264_even_size(self) -> "IngestConfig":
        if self.shard_format == "h264" and self.size % 2:  # yuv420p halves chroma: libx264 refuses odd sizes
            raise ValueError(f"ingest.size ({self.size}) must be even for ingest.shard_format h264")
        return self


class ModelConfig(Section):
    """Video ViT. The frame encoder (bag-of-frames baseline) is the same model with T=1."""

    patch: int = Field(8, ge=1)
    tubelet: int = Field(2, ge=1)
    dim: int = Field(128, ge=8)
    depth: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    decoder_dim: int = Field(64, ge=8)
    decoder_depth: int = Field(2, ge=1)
    decoder_heads: int = Field(4, ge=1)
    causal_time: bool = False

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ModelConfig":
        if self.dim % self.heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"model.decoder_dim ({self.decoder_dim}) must be divisible by "
                             f"model.decoder_heads ({self.decoder_heads})")
        return self


ObjectiveName = Literal["mae", "jepa", "pretext", "contrastive"]


def _unit_range(r: tuple[float, float]) -> tuple[float, float]:
    if not 0 < r[0] <= r[1] <= 1:
        raise ValueError("must be [min, max] with 0 < min <= max <= 1")
    return r


class JepaConfig(Section):
    """V-JEPA: predict the EMA target encoder's features of masked tube blocks from the context."""

    ema_start: float = Field(0.996, ge=0, le=1)
    ema_end: float = Field(1.0, ge=0, le=1)
    predictor_dim: int = Field(64, ge=8)
    predictor_depth: int = Field(2, ge=1)
    predictor_heads: int = Field(4, ge=1)
    target_ratio: float = Field(0.75, gt=0, lt=1)
    block_scale: tuple[float, float] = Field((0.15, 0.3))
    block_aspect: tuple[float, float] = Field((0.75, 1.5))

    _block_scale = field_validator("block_scale")(lambda r: _unit_range(r))

    @field_validator("block_aspect")
    @classmethod
    def _aspect_range(cls, r: tuple[float, float]) -> tuple[float, float]:
        if not 0 < r[0] <= r[1]:
            raise ValueError("must be [min, max] with 0 < min <= max")
        return r

    @model_validator(mode="after")
    def _ranges(self) -> "JepaConfig":
        if self.ema_start > self.ema_end:
            raise ValueError(f"pretrain.jepa.ema_start ({self.ema_start}) must be <= pretrain.jepa.ema_end "
                             f"({self.ema_end})")
        if self.predictor_dim % self.predictor_heads:
            raise ValueError(f"pretrain.jepa.predictor_dim ({self.predictor_dim}) must be divisible by "
                             f"pretrain.jepa.predictor_heads ({self.predictor_heads})")
        return self


class PretextConfig(Section):
    """Temporal transformation recognition: forward/backward, playback speed, shuffled/ordered."""

    tasks: list[Literal["arrow", "speed", "shuffle"]] = Field(
        default_factory=lambda: ["arrow", "speed", "shuffle"], min_length=1)
    speeds: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=2)
    shuffle_prob: float = Field(0.3, gt=0, lt=1)

    _unique_tasks = field_validator("tasks")(distinct("tasks"))

    @field_validator("speeds")
    @classmethod
    def _speeds(cls, speeds: list[int]) -> list[int]:
        return distinct_speeds(speeds)


class ContrastiveConfig(Section):
    """CVRL-style InfoNCE between two augmented clips of one video at a sampled time gap."""

    temperature: float = Field(0.1, gt=0, le=10)
    max_gap: int = Field(16, ge=0)
    crop_scale: tuple[float, float] = Field((0.7, 1.0))
    proj_dim: int = Field(128, ge=8)
    flip: bool = False
    colour: float = Field(0.3, ge=0, lt=1)
    background: Literal["keep", "swap"] = "keep"
    pretext_views: bool = True

    _crop_scale = field_validator("crop_scale")(lambda r: _unit_range(r))


class PretrainConfig(Section):
    objective: ObjectiveName | dict[ObjectiveName, float] = Field(default_factory=lambda: {"pretext": 1.0, "contrastive": 1.0})
    mask_ratio: float = Field(0.9, gt=0, lt=1)
    masking: Literal["tubes", "future"] = "tubes"
    baseline_mask_ratio: float = Field(0.75, gt=0, lt=1)
    normalize_targets: bool = False
    steps: int = Field(600, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(30, ge=0)
    nproc: int = Field(1, ge=1, le=64)
    baseline_steps: int = Field(600, ge=1)
    log_every: int = Field(20, ge=1)
    grad_clip: float | None = Field(1.0, gt=0)
    eval_every: int = Field(250, ge=0)
    eval_batch: int = Field(64, ge=1)
    threads: int = Field(0, ge=0)
    num_workers: int = Field(0, ge=0)
    shard_window: int = Field(0, ge=0)
    metrics_port: int | None = Field(9400, ge=0, le=65535)
    metrics_host: str = Field("127.0.0.1", min_length=1)
    system_metrics_interval: float | None = Field(10.0, gt=0)
    micro_batch: int | None = Field(None, ge=1)
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    compile: bool = False
    activation_checkpointing: bool = False
    checkpoint_every: int = Field(250, ge=0)
    checkpoint_dir: str | None = None
    keep_last: int = Field(2, ge=1)
    resume: bool = True
    baseline_objective: Literal["mae", "contrastive"] = "mae"
    real_footage: bool = False
    # the video encoder's initial weights (train/init_from.py): a videossl encoder.pt, models:/<name>/<version> or
    # models:/<name>@<alias>, or a published V-JEPA / VideoMAE .pth of this architecture; null = a random draw
    init_from: str | None = None
    jepa: JepaConfig = JepaConfig()
    pretext: PretextConfig = PretextConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()

    @model_validator(mode="after")
    def _batch_splits(self) -> "PretrainConfig":
        from videossl.train.batching import objectives_of, split_batch

        split_batch(self.batch_size, self.nproc, self.micro_batch, objectives_of(self))
        return self

    @field_validator("objective")
    @classmethod
    def _positive_weights(cls, objective):
        if isinstance(objective, dict):
            if not objective:
                raise ValueError("name at least one objective")
            if any(w <= 0 for w in objective.values()):
                raise ValueError(f"objective weights must be > 0 (got {objective})")
        return objective


class AttentiveProbeConfig(Section):
    """V-JEPA-style attentive probe: a learned query cross-attends to the frozen tokens (eval/probes.py)."""
    heads: int = Field(4, ge=1)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-2, gt=0)
    weight_decays: list[float] = Field(default_factory=lambda: [0.5, 0.05, 0.005], min_length=1)
    max_dim: int | None = Field(None, ge=1)
    position: bool = True
    blocks: int = Field(1, ge=1)  # V-JEPA's probe depth: 1 = the cross-attention pooler alone; N adds N-1 blocks


class KnnProbeConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20], min_length=1)
    temperature: float = Field(0.07, gt=0)

    @field_validator("ks")
    @classmethod
    def _ks(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError("every k must be >= 1")
        return sorted(set(ks))


class RealArrowConfig(Section):
    """real_arrow_of_time: leave-one-group-out on real footage, with the codec control (eval/codec_control.py)."""
    clips_per_video: int = Field(12, ge=1)
    val_fraction: float = Field(0.25, gt=0, lt=1)
    control_sigma: float = Field(2.0, gt=0)
    control_tau: float = Field(30.0, ge=0)


class CeilingConfig(Section):
    """The supervised ceiling (eval/ceiling.py): a small 3D CNN per task, trained with its labels."""
    steps: int = Field(600, ge=1)
    batch_per_task: int = Field(32, ge=1)
    width: int = Field(16, ge=4)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    eval_every: int = Field(50, ge=1)
    batch_size: int = Field(256, ge=1)
    windows: int = Field(16, ge=1)
    patience: int = Field(4, ge=1)
    min_delta: float = Field(0.02, ge=0, le=1)


def _task_names() -> tuple[str, ...]:
    from videossl.eval.tasks import TASK_NAMES  # the one home of the task list (imported late: it imports config)

    return TASK_NAMES


def _default_tasks() -> tuple[str, ...]:
    from videossl.eval.tasks import DEFAULT_TASKS

    return DEFAULT_TASKS


def known_tasks(tasks: list[str]) -> list[str]:
    """Benchmark task names (videossl.eval.tasks.TASKS and real_arrow_of_time), each once."""
    unknown = [t for t in tasks if t not in _task_names()]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} (known: {', '.join(_task_names())})")
    return distinct("tasks")(tasks)


class ProbeEvalConfig(Section):
    tasks: list[str] = Field(default_factory=lambda: list(_default_tasks()), min_length=1)  # the registry's order
    probes: list[Literal["linear", "attentive", "knn"]] = Field(default_factory=lambda: ["linear", "attentive", "knn"], min_length=1)
    speeds: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=2)
    l2_grid: list[float] = Field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], min_length=1)
    epochs: int = Field(100, ge=1)
    attentive: AttentiveProbeConfig = AttentiveProbeConfig()
    knn: KnnProbeConfig = KnnProbeConfig()
    real: RealArrowConfig = RealArrowConfig()
    pool_grid: int = Field(2, ge=1, le=8)
    clips_per_video: int = Field(3, ge=1)
    diagnostic_clips_per_video: int = Field(1, ge=1)
    random_init_seeds: int = Field(3, ge=1)
    workers: int = Field(0, ge=0, le=64)
    bootstrap: int = Field(1000, ge=100)
    null_permutations: int = Field(200, ge=20)
    determinable: float = Field(150.0, ge=0)
    headline_ceiling: float = Field(0.9, ge=0, le=1)
    ceiling: CeilingConfig = CeilingConfig()
    batch_size: int = Field(64, ge=1)
    cache_dir: str | None = ".cache/features"

    _tasks = field_validator("tasks")(lambda t: known_tasks(t))

    @field_validator("speeds")
    @classmethod
    def _speeds(cls, speeds: list[int]) -> list[int]:
        return distinct_speeds(speeds)

    _distinct_probes = field_validator("probes")(distinct("probes"))


class TrackingConfig(Section):
    # Embedded store by default: a sqlite file under the repo, no server needed.
    uri: str | None = "sqlite:///mlruns.db"
    artifacts: str | None = "mlartifacts"
    experiment: str = "videossl"

    _uri = field_validator("uri")(lambda v: tracking_store(no_credentials(
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the Secret cluster.secrets.mlflow), or for a "
        "database store the whole URI in MLFLOW_TRACKING_URI with tracking.uri: null")(v)))


class RegisterConfig(Section):
    """The champion gate (videossl.gate): every gate metric must beat the champion and its own
    bag-of-frames baseline, each by its margin, for the new version to become `champion`."""
    model_name: str = Field("videossl-encoder", min_length=1)
    gate_metrics: list[str] = Field(default_factory=lambda: ["temporal_score.video"], min_length=1)
    min_margin_over_champion: float = Field(0.01, ge=0, le=1)
    min_margin_over_frames: float = Field(0.05, ge=0, le=1)
    higher_is_better: bool = True
    in_experiments: bool = False
    # the registry-side lock that serialises gates across machines (videossl.registry.registry_lock)
    lock_wait_s: float = Field(600.0, gt=0)
    lock_stale_s: float = Field(900.0, gt=0)

    @field_validator("gate_metrics")
    @classmethod
    def _video_scores(cls, metrics: list[str]) -> list[str]:
        # Only a video-model score has a bag-of-frames counterpart (task.frames[_probe]) to beat.
        for m in metrics:
            if not re.fullmatch(r"[a-z0-9_]+\.video(_[a-z0-9_]+)?", m):
                raise ValueError(f"{m!r} is not a video-model score: use task.video or task.video_<probe>, "
                                 "e.g. arrow_of_time.video, future_retrieval.video_r1")
        if len(set(metrics)) != len(metrics):
            raise ValueError("gate metrics must be distinct")
        return metrics


CPU_QUANTITY = r"^\d+(\.\d+)?m?$"  # Kubernetes quantities: "500m", "2"
QUANTITY = r"^\d+(Ki|Mi|Gi|Ti|K|M|G|T)?$"  # "64Gi"


class StepResources(Section):
    cpu: str = Field("1", pattern=CPU_QUANTITY)
    memory: str = Field("2Gi", pattern=QUANTITY)
    retries: int = Field(0, ge=0, le=10)


# the fields of a Kubernetes toleration (core/v1 Toleration)
TOLERATION_FIELDS = ("key", "operator", "value", "effect", "tolerationSeconds")


class ClusterJobConfig(Section):
    """The multi-node pretraining job the pretrain component submits on the cluster."""
    launcher: Literal["trainjob", "pytorchjob", "none"] = Field(
        "trainjob")
    runtime: str = Field("torch-distributed", min_length=1)
    nodes: int = Field(2, ge=1, le=512)
    procs_per_node: int = Field(1, ge=1, le=16)
    gpus_per_node: int = Field(1, ge=0, le=16)
    cpu: str = Field("8", pattern=CPU_QUANTITY)
    memory: str = Field("64Gi", pattern=QUANTITY)
    accelerator_type: str = Field("nvidia.com/gpu", min_length=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    scratch: str = Field("200Gi", pattern=QUANTITY)
    stream_shards: bool = True
    shard_cache_gib: float = Field(64.0, gt=0)
    shm: str = Field("16Gi", pattern=QUANTITY)
    timeout_s: int = Field(86400, ge=60)
    poll_s: float = Field(20.0, gt=0)

    @field_validator("tolerations")
    @classmethod
    def _known_toleration_fields(cls, v: list[dict[str, str]]) -> list[dict[str, str]]:
        # checked here, not only when the pipeline compiles: `videossl validate` must catch a typo
        for i, tol in enumerate(v):
            unknown = sorted(set(tol) - set(TOLERATION_FIELDS))
            if unknown:
                raise ValueError(f"entry [{i}] has unknown field(s) {unknown} (allowed: {', '.join(TOLERATION_FIELDS)})")
        return v


StepName = Literal["ingest", "pretrain", "ceiling", "probe_eval", "register"]  # the pipeline's steps (stages.STAGES)


class ClusterSecrets(Section):
    """Secret names. MLflow logins are per role (videossl.cluster.access): `mlflow` logs runs
    (pretrain, probe-eval, the training job), `mlflow_register` writes the registry (register only);
    the server's admin login (k8s/base/mlflow-access.yaml) is mounted in no pipeline pod."""
    s3: str = Field("videossl-s3", min_length=1)
    # a step -> its own S3 Secret instead of `s3` (least privilege: ingest is the one step that reads the
    # sources' buckets; the training job uses pretrain's)
    s3_steps: dict[StepName, str] = Field(default_factory=dict)
    mlflow: str = Field("videossl-mlflow", min_length=1)
    mlflow_register: str = Field("videossl-mlflow-register", min_length=1)

    def s3_for(self, step: str) -> str:
        return self.s3_steps.get(step, self.s3)


class ClusterConfig(Section):
    """Read only on Kubernetes (`videossl pipeline submit`, the KFP DAG, the job launcher)."""
    require_digests: bool = False  # declared first: the image checks below read it
    image: str = Field("ghcr.io/videossl/pipeline:0.1.0", min_length=1)
    trainer_image: str = Field("ghcr.io/videossl/trainer:0.1.0-cuda12.8", min_length=1)
    namespace: str = Field("videossl", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    service_account: str = Field("videossl-pipeline", min_length=1)
    root: str = "s3://videossl/runs"
    kfp_host: str | None = None
    experiment: str = Field("videossl", min_length=1)
    data_remote: str = "s3://videossl/dvc"
    data_version: str | None = None
    data_repo: str | None = None
    ingest_partitions: int = Field(1, ge=1, le=1024)
    secrets: ClusterSecrets = ClusterSecrets()
    job: ClusterJobConfig = ClusterJobConfig()
    resources: dict[Literal["split_params", StepName], StepResources] = Field(
        default_factory=lambda: {
            "split_params": StepResources(cpu="500m", memory="512Mi", retries=2),
            "ingest": StepResources(cpu="2", memory="4Gi", retries=2),
            "pretrain": StepResources(cpu="2", memory="4Gi", retries=0),
            "ceiling": StepResources(cpu="4", memory="4Gi", retries=1),
            "probe_eval": StepResources(cpu="4", memory="8Gi", retries=1),
            "register": StepResources(cpu="1", memory="2Gi", retries=2),
        })

    _kfp_host = field_validator("kfp_host")(lambda v: http_url(no_credentials(
        "the KFP client's own credentials (KF_PIPELINES_SA_TOKEN_PATH, or kfp's credentials file)")(v)))
    _s3 = field_validator("root", "data_remote")(lambda v: s3_uri(no_credentials(S3_CREDENTIALS)(v)))
    _repo = field_validator("data_repo")(lambda v: no_credentials("a git credential helper or a deploy key")(v))

    @field_validator("image", "trainer_image")
    @classmethod
    def _pinned(cls, ref: str, info: ValidationInfo) -> str:
        from videossl.cluster.images import is_pinned

        if info.data.get("require_digests") and not is_pinned(ref):
            raise ValueError(f"{ref!r} is a tag, and cluster.require_digests is on: pin it by digest "
                             "(`videossl pin-images` writes repo:tag@sha256:... here)")
        return ref


NOT_GIVEN = "_videossl_not_given"  # marks a section a step was not handed (videossl.step_params)


with warnings.catch_warnings():
    # `register` (a step name) shadows ABCMeta.register on the class object only; fields are unaffected.
    warnings.filterwarnings("ignore", message='Field name "register"')

    class Config(Section):
        seed: int = 0
        ingest: IngestConfig = IngestConfig()
        model: ModelConfig = ModelConfig()
        pretrain: PretrainConfig = PretrainConfig()
        probe_eval: ProbeEvalConfig = ProbeEvalConfig()
        tracking: TrackingConfig = TrackingConfig()
        register: RegisterConfig = RegisterConfig()
        cluster: ClusterConfig = ClusterConfig()

        @model_serializer(mode="wrap")
        def _only_given_sections(self, handler):
            # a step's share of the params dumps as what it was handed, not as defaults it never saw
            return {k: v for k, v in handler(self).items() if not getattr(self.__dict__[k], NOT_GIVEN, False)}

        @model_validator(mode="after")
        def _shapes_fit_the_model(self, info: ValidationInfo) -> "Config":
            # Params that cannot work must fail here, before any decoding or training. A step's share
            # of the params (videossl.step_params) lacks some sections: their checks ran on the whole
            # params before the split, and a default standing in for a missing section proves nothing.
            absent = set((info.context or {}).get("absent", ()))
            if not absent & {"ingest", "model"}:
                if self.ingest.size % self.model.patch:
                    raise ValueError(f"ingest.size ({self.ingest.size}) must be divisible by model.patch "
                                     f"({self.model.patch})")
                if self.ingest.clip_frames % self.model.tubelet:
                    raise ValueError(f"ingest.clip_frames ({self.ingest.clip_frames}) must be divisible by "
                                     f"model.tubelet ({self.model.tubelet})")
                if (not absent & {"pretrain"} and self.pretrain.masking == "future"
                        and self.ingest.clip_frames // self.model.tubelet < 2):
                    raise ValueError(f"pretrain.masking (future) needs at least two time slices, a past and a "
                                     f"future: ingest.clip_frames ({self.ingest.clip_frames}) / model.tubelet "
                                     f"({self.model.tubelet}) is 1")
            for m in (self.register.gate_metrics if not absent & {"register", "probe_eval"} else ()):
                from videossl.eval.tasks import HELD_OUT, of_kind

                task, _ = scores.split(m)
                scored = (bool(of_kind(HELD_OUT, self.probe_eval.tasks)) if task == scores.HEADLINE
                          else task in self.probe_eval.tasks)
                if not scored:
                    raise ValueError(f"register.gate_metrics ({m}) is not scored by probe_eval.tasks "
                                     f"{self.probe_eval.tasks}: change one of the two keys")
            return self


# ----------------------------------------------------------------------------------------------
# loading


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = _dotted(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        named = _LEADING_KEY.match(msg)
        if named:  # cross-field checks name the offending key first: report under that key
            key = named.group(1)
        if e["type"] == "extra_forbidden":
            section = _section_at(e["loc"][:-1])
            allowed = ", ".join(sorted(section.model_fields)) if section else "?"
            lines.append(f"unknown key '{key}' (allowed here: {allowed})")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, (dict, BaseModel)) else f" (got {secrets.redact(repr(got))})"
            lines.append(f"invalid value for '{key}': {msg}{got_s}")
    return "invalid params:\n  " + "\n  ".join(lines)


_LEADING_KEY = re.compile(r"^([a-z_]+(?:\.[a-z_]+)+) \(")


def _dotted(loc: tuple) -> str:
    """('probe_eval', 'tasks', 1) -> 'probe_eval.tasks[1]'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _section_at(loc: tuple) -> type[BaseModel] | None:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _apply_override(tree: dict, assignment: str) -> None:
    """`section.key=value` (value parsed as YAML), like `dvc exp run -S`."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    dotted, raw = assignment.split("=", 1)
    node = tree
    parts = dotted.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: '{p}' is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {secrets.redact(repr(assignment))}: the value is not valid YAML "
                          f"({str(e).splitlines()[0]})") from None


def parse_config(text: str, overrides: list[str] | None = None) -> Config:
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"params are not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError("params must be a mapping of sections")
    for o in overrides or []:
        _apply_override(tree, o)
    return validate_tree(tree)


def validate_tree(tree: dict, absent: tuple[str, ...] = ()) -> Config:
    """The Config of a parsed params tree; `absent`: sections left out on purpose, whose cross-section
    checks are skipped (videossl.step_params)."""
    try:
        return Config.model_validate(tree, context={"absent": absent})
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from None


def load_config(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file not found: {p}")
    return parse_config(p.read_text(), overrides)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
