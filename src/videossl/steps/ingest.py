"""Ingest step: raw videos -> decoded, resampled clip shards + manifest + quarantine report + stats.

Every bad input (empty, truncated, not a video, too short, unreadable, missing in S3) is skipped and
recorded with its reason; the rest is ingested. Only when nothing usable remains does the step fail.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from videossl import processes, stages
from videossl.config import Config, IngestConfig
from videossl.data import shards, sources
from videossl.data.decode import DecodeError, Limits, decode_video, make_decoder
from videossl.monitoring import push_step_metrics
from videossl.progress import Progress
from videossl.storage import write_text_atomic
from videossl.errors import StepError

log = logging.getLogger(__name__)

QUARANTINE = "quarantine.json"
# The reasons of an ingest that failed: beside the previous dataset, whose own quarantine.json stays
FAILED_QUARANTINE = "quarantine.failed.json"
STATS = shards.STATS


class IngestError(StepError):
    pass


def _quarantine(entries: list[dict], uri: str, reason: str) -> None:
    log.warning("quarantined %s: %s", uri, reason)
    entries.append({"path": uri, "reason": reason})


def _load_frames(video: sources.VideoInput, icfg: IngestConfig, decoder, cache: Path) -> np.ndarray:
    """Decoded frames of one video, or DecodeError / OSError with the reason it cannot be used."""
    path = sources.fetch_local(video, cache, icfg.s3_endpoint_url)
    if path.stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    frames, meta = decode_video(path, decoder, icfg.fps, icfg.size, Limits.of(icfg))
    if meta.frames <= 1:
        raise DecodeError("a single frame: no motion to learn from")
    if len(frames) < icfg.clip_frames:
        raise DecodeError(f"too short: {len(frames)} frames at {icfg.fps:g} fps "
                          f"({meta.duration:.2f} s), one clip needs {icfg.clip_frames}")
    return frames


def _decode_job(job: tuple[sources.VideoInput, IngestConfig, Path]) -> tuple[np.ndarray | None, bytes | None, str | None, bool]:
    """(frames, payload, None, _) of one video, or (None, None, the reason it cannot be used, whether the
    reason is a decoding verdict): run in decode worker processes, so every failure comes back as a value.
    For h264 shards the video is encoded here too (payload: its mp4), and `frames` are what readers will
    decode from it, which the manifest's digests describe."""
    video, icfg, cache = job
    try:
        frames = _load_frames(video, icfg, make_decoder(icfg.decoder), cache)
    except (DecodeError, OSError) as e:
        return None, None, str(e), True
    except Exception as e:  # botocore errors while downloading, etc.: quarantine, keep going
        return None, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", False
    if icfg.shard_format != "h264":
        return frames, None, None, True
    from videossl.data.encode import h264_bytes  # (PyAV, only for h264 shards)

    payload = h264_bytes(frames, icfg.fps, icfg.h264.gop, icfg.h264.crf)
    return shards.decode_h264(shards.h264_reader(payload), range(len(frames))), payload, None, True


def decoded(inputs: list[sources.VideoInput], icfg: IngestConfig, cache: Path, workers: int):
    """Yields (video, frames, payload, reason, decode_verdict) in input order, decoding in `workers` processes
    (spawned: the caller may hold threads a fork would copy mid-lock) a few videos ahead of the writer."""
    jobs = [(v, icfg, cache) for v in inputs]  # the ingest section only: a step's share of the params pickles
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            yield (job[0], *_decode_job(job))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for job, result in zip(jobs, pool.map(_decode_job, jobs, chunksize=8)):
            yield (job[0], *result)


DOWNLOADS = ".download"
MAX_LISTED = 100  # skipped files named in ingest.json (all are counted, and each is logged)


def reason_kind(reason: str) -> str:
    """What a quarantine reason is about, for counting: the text before its first ':' or '('."""
    return re.split(r"[:(;]", reason, maxsplit=1)[0].strip() or reason

DATASET = (shards.SHARDS, QUARANTINE, STATS, stages.METRICS, stages.TIMINGS, shards.MANIFEST)  # the manifest last: it is the commit


def staging_dir(out: Path) -> Path:
    """Where a new dataset is built: a sibling of the output folder (never inside a DVC output)."""
    return out.parent / f".{out.name}.partial"


def _swap_in(stage: Path, out: Path) -> None:
    """Replace the dataset in `out` by the one built in `stage`. The old manifest goes first and the
    new one comes last, so a kill inside this short window leaves no manifest (a clear "run ingest"
    error), never a manifest beside shards that are not its own."""
    (out / shards.MANIFEST).unlink(missing_ok=True)
    trash = out.parent / f".{out.name}.old"
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()
    for name in DATASET:
        if (out / name).exists():
            (out / name).rename(trash / name)
        (stage / name).rename(out / name)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)


def _abandon(stage: Path, out: Path, quarantine: list[dict] | None = None) -> Path:
    """Give up the dataset being built: the previous one in `out` stays whole, with its own report;
    this attempt's quarantine reasons go to FAILED_QUARANTINE beside it (returned)."""
    report = out / FAILED_QUARANTINE
    if quarantine is not None:
        write_text_atomic(report, json.dumps(quarantine, indent=2) + "\n")
    shutil.rmtree(stage, ignore_errors=True)
    return report


def ingest(cfg: Config, out_dir: str | Path) -> dict:
    """Run ingest into `out_dir`; returns the stats also written to `out_dir/ingest.json`. One ingest
    at a time per folder: a second is refused, naming the one that holds it (two would share the
    staging folder and swap shards under each other's manifest).

    The whole source list is one partition, merged at once: the same two functions a partitioned
    ingest runs as separate processes or pods (`ingest_partition`, then `merge`)."""
    out = Path(out_dir)
    with _building(out) as stage:
        _partition(cfg, partition_dir(stage / PARTS, 0, 1), 0, 1, out / SOURCES, time.time())
        return _merge(cfg, stage / PARTS, out, stage)


@contextmanager
def _building(out: Path) -> Iterator[Path]:
    """Hold `out`'s run lock (IngestError naming the holder when another run has it) and yield the
    empty staging folder the new dataset is built in, beside the old one: it is swapped in at the end
    (_swap_in), so a failed, killed or out-of-space run leaves the previous dataset whole, and the
    staging folder goes whatever happens."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        with processes.run_lock(out):
            stage = staging_dir(out)
            shutil.rmtree(stage, ignore_errors=True)
            try:
                yield stage
            finally:
                shutil.rmtree(stage, ignore_errors=True)
    except processes.Busy as e:
        raise IngestError(str(e)) from None


# ----------------------------------------------------------------------------------------------
# partitions: chunks of the source list, ingested independently, then merged into one dataset

PARTS = "parts"
DONE = "done.json"      # a partition's commit record, written last: present = the partition is whole
ROWS = "rows.jsonl"
SOURCES = "sources"     # the sources' working folder (the rendered synthetic world, S3 downloads)
LOCKS = ".locks"        # one run lock per partition


def parse_partition(spec: str) -> tuple[int, int]:
    """'I/N' -> (I, N), or ConfigError (exit 2) naming what is wrong."""
    from videossl.config import ConfigError

    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--partition {spec!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--partition {spec!r}: I must be in 0..N-1 and N at least 1")
    return index, count


def partition_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}"


def partition_dir(parts: Path, index: int, count: int) -> Path:
    return parts / partition_name(index, count)


def _identity(cfg: Config, inputs: list[sources.VideoInput], index: int, count: int) -> str:
    """What a partition's output depends on: its inputs, the ingest params and the seed (splits)."""
    h = hashlib.sha256(json.dumps({"ingest": cfg.ingest.model_dump(mode="json"), "seed": cfg.seed,
                                   "index": index, "count": count}, sort_keys=True).encode())
    for v in inputs:
        h.update(f"\n{v.source_id}\t{v.uri}\t{v.group}\t{v.kind}\t{json.dumps(v.labels, sort_keys=True)}".encode())
    return h.hexdigest()


def ingest_partition(cfg: Config, parts_dir: str | Path, index: int, count: int, into: str | Path | None = None,
                     work: str | Path | None = None) -> dict:
    """Ingest partition `index` of `count` into `parts_dir` (`videossl ingest --partition I/N`): the
    chunks of `ingest.chunk_videos` source-ordered videos numbered index, index + count, ...; its
    shards are named by chunk, so the merged dataset is the same whatever `count` is. A partition
    already whole for the same inputs and params is not redone (a retried process resumes).
    `into`: the partition's own folder instead of parts_dir/part-I-of-N (a pod publishes it alone);
    `work`: the sources' working folder (default: parts_dir/sources, shared by the partitions)."""
    parts = Path(parts_dir)
    if not 0 <= index < count:
        raise IngestError(f"partition {index}/{count}: the index must be in 0..{count - 1}")
    parts.mkdir(parents=True, exist_ok=True)
    target = Path(into) if into is not None else partition_dir(parts, index, count)
    try:  # the lock lives beside the partition's folder, which is replaced while it is held
        with processes.run_lock(parts / LOCKS / partition_dir(parts, index, count).name):
            return _partition(cfg, target, index, count, Path(work) if work else parts / SOURCES, time.time())
    except processes.Busy as e:
        raise IngestError(str(e)) from None


def _chunks_of(ordered: list, chunk_videos: int, index: int, count: int) -> list[tuple[int, list]]:
    return [(k, ordered[start:start + chunk_videos])
            for k, start in enumerate(range(0, len(ordered), chunk_videos)) if k % count == index]


def _partition(cfg: Config, target: Path, index: int, count: int, work: Path, started: float) -> dict:
    icfg = cfg.ingest
    skipped: list[str] = []
    inputs, rejected = sources.expand_sources(icfg, work, skipped)
    ordered = sorted(inputs, key=lambda v: v.source_id)
    chunks = _chunks_of(ordered, icfg.chunk_videos, index, count)
    mine = [v for _, chunk in chunks for v in chunk]
    identity = _identity(cfg, mine, index, count)
    done = target / DONE
    if done.is_file() and json.loads(done.read_text()).get("identity") == identity:
        print(f"ingest: partition {index}/{count} is already whole ({target}): not redone")
        return json.loads(done.read_text())
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if index == 0:  # what the expansion left out is said once, by the first partition
        for path in skipped:
            log.warning("skipped %s: not a video file extension (%s)", path, ", ".join(sources.VIDEO_EXTENSIONS))
    quarantine: list[dict] = []
    if index == 0:
        for r in rejected:
            _quarantine(quarantine, r.uri, r.reason)
    order = {v.source_id: i for i, v in enumerate(ordered)}
    rows: list[dict] = []
    n_videos = n_frames = 0
    seconds = 0.0
    workers = min(icfg.workers or os.cpu_count() or 1, max(1, len(mine)))
    progress = Progress(total=len(mine), desc="ingest" if count == 1 else f"ingest {index}/{count}", unit="videos")
    chunk_of = {v.source_id: k for k, chunk in chunks for v in chunk}
    writer = None
    with progress as bar:
        for video, frames, payload, reason, verdict in decoded(mine, icfg, target / DOWNLOADS, workers):
            bar.update(1)
            if writer is None or writer.first != chunk_of[video.source_id] * shards.CHUNK_SHARDS:
                if writer is not None:
                    writer.flush()  # a chunk's last shard: the next chunk's shards are numbered from its own start
                writer = shards.ShardWriter(target, icfg.shard_frames, chunk_of[video.source_id], icfg.shard_format)
            if reason is not None:
                if "NoSuchBucket" in reason:  # the bucket went away mid-run: every later video would fail too
                    raise IngestError(f"{video.uri}: the bucket no longer exists (deleted mid-run?); the previous "
                                      "dataset is unchanged")
                if not verdict and ("404" in reason or "NoSuchKey" in reason):
                    reason = "missing s3 key"
                _quarantine(quarantine, video.uri, reason)
                quarantine[-1]["order"] = order[video.source_id]
                continue
            try:
                split = shards.split_of(video.group, icfg.splits, cfg.seed, video.labels.get("split"))
            except ValueError as e:  # a label sidecar that names a split that does not exist
                _quarantine(quarantine, video.uri, f"bad label sidecar: {e}")
                quarantine[-1]["order"] = order[video.source_id]
                continue
            sample = {"source_id": video.source_id, "kind": video.kind, "split": split, "group": video.group,
                      "labels": video.labels, "fps": icfg.fps}  # a tar shard's <key>.json
            rows += _rows(video, frames, split, *writer.add(frames, sample, payload), icfg)
            n_videos += 1
            n_frames += len(frames)
            seconds += len(frames) / icfg.fps
        if writer is not None:
            writer.flush()
    shutil.rmtree(target / DOWNLOADS, ignore_errors=True)
    write_text_atomic(target / ROWS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    write_text_atomic(target / QUARANTINE, json.dumps(quarantine, indent=2) + "\n")
    record = {"identity": identity, "index": index, "count": count, "chunks": [k for k, _ in chunks],
              "videos": n_videos, "frames": n_frames, "seconds": seconds, "clips": len(rows),
              "skipped": skipped if index == 0 else [], "started": started, "finished": time.time()}
    write_text_atomic(done, json.dumps(record, indent=2) + "\n")  # last: the partition is whole
    return record


def _rows(video: sources.VideoInput, frames: np.ndarray, split: str, shard_name: str, offset: int,
          icfg: IngestConfig) -> list[dict]:
    t_clip = icfg.clip_frames
    return [{
        "clip_id": f"{video.source_id}#{start}",
        "source_id": video.source_id,
        "group": video.group,
        "kind": video.kind,
        "split": split,
        "shard": shard_name,
        "offset": offset,
        "video_frames": len(frames),
        "start": start,
        "start_time": round(start / icfg.fps, 6),
        "fps": icfg.fps,
        "shape": [t_clip, icfg.size, icfg.size, 3],
        "labels": video.labels,
        "digest": shards.clip_digest(frames[start:start + t_clip]),
    } for start in range(0, len(frames) - t_clip + 1, icfg.clip_stride)]


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no data copied, the partition keeps its file until the merge succeeds), or a copy
    where the two folders are on different file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def merge(cfg: Config, parts_dir: str | Path, out_dir: str | Path) -> dict:
    """Merge the `count` partitions in `parts_dir` into one dataset in `out_dir` (`videossl ingest
    --merge PARTS`): the manifest, shards, quarantine report and stats a one-process ingest writes,
    with the same digest. Refused, before anything moves, while a partition is missing or unfinished."""
    out = Path(out_dir)
    with _building(out) as stage:
        return _merge(cfg, Path(parts_dir), out, stage)


def merge_published(cfg: Config, parts: list[str], out_uri: str) -> dict:
    """merge() of partitions published where the cluster's tasks put them (s3:// or local folders, each
    named part-I-of-N) into the dataset at `out_uri`. From S3 no shard moves: each partition's small
    files are fetched and merged, and the dataset's `_COMPLETE` names the partitions' shard objects
    where they are (entries with a "uri", which every reader follows), so the merge costs the manifests,
    not the dataset, and the partitions' shards stay as long as the dataset does."""
    import tempfile

    from videossl import storage

    remote = [u for u in parts if storage.is_s3(u)]
    if remote and (len(remote) != len(parts) or not storage.is_s3(out_uri)):  # before anything is fetched
        raise IngestError(f"partitions {parts} and the dataset {out_uri}: all on S3, or the partitions local")
    with tempfile.TemporaryDirectory(prefix="videossl-parts-", dir=os.environ.get("VIDEOSSL_STAGING")) as tmp:
        referenced: dict[str, dict] = {}
        for uri in parts:  # each partition under its own name, as merge finds them
            named = Path(tmp) / uri.rstrip("/").rsplit("/", 1)[-1]
            if not storage.is_s3(uri):
                named.symlink_to(Path(uri).resolve(), target_is_directory=True)
                continue
            storage.download_dir(uri, named, skip=shards.SHARDS)
            referenced.update({rel: {**entry, "uri": entry.get("uri") or storage.join(uri, rel)}
                               for rel, entry in storage.read_complete(uri).items() if rel.startswith(f"{shards.SHARDS}/")})
        if not remote:
            with storage.staged([], out_uri) as (_, out):
                return merge(cfg, tmp, out)
        with tempfile.TemporaryDirectory(prefix="videossl-merged-", dir=os.environ.get("VIDEOSSL_STAGING")) as out:
            stats = merge(cfg, tmp, out)
            storage.upload_dir(Path(out), out_uri, referenced=referenced)
        return stats


def _merge(cfg: Config, parts: Path, out: Path, stage: Path) -> dict:
    icfg = cfg.ingest
    found = sorted(parts.glob("part-*-of-*")) if parts.is_dir() else []
    counts = {int(p.name.rsplit("-", 1)[1]) for p in found}
    if len(counts) != 1:
        raise IngestError(f"{parts}: expected the partitions of one ingest (part-I-of-N), found "
                          f"{[p.name for p in found] or 'none'}")
    count = counts.pop()
    records = []
    for i in range(count):
        done = partition_dir(parts, i, count) / DONE
        if not done.is_file():
            raise IngestError(f"partition {i}/{count} is missing or unfinished ({done.parent}): run "
                              f"`videossl ingest --partition {i}/{count} --out {parts}` (a finished one is not redone)")
        records.append(json.loads(done.read_text()))
    stage.mkdir(parents=True, exist_ok=True)
    (stage / shards.SHARDS).mkdir(exist_ok=True)
    rows: list[dict] = []
    failures: list[dict] = []
    quarantine: list[dict] = []
    for i in range(count):
        part = partition_dir(parts, i, count)
        for f in sorted(f for f in (part / shards.SHARDS).glob("*") if f.name.endswith(tuple(shards.SHARD_SUFFIX.values()))):
            _link_or_copy(f, stage / shards.SHARDS / f.name)
        rows += [json.loads(line) for line in (part / ROWS).read_text().splitlines() if line.strip()]
        for q in json.loads((part / QUARANTINE).read_text()):
            (failures if "order" in q else quarantine).append(q)
    # one process's order: the expansion's rejections first, then the videos in source order
    quarantine += [{"path": q["path"], "reason": q["reason"]} for q in sorted(failures, key=lambda q: q["order"])]
    rows.sort(key=lambda r: (r["source_id"], r["start"]))
    skipped = records[0]["skipped"]
    n_videos = sum(r["videos"] for r in records)
    n_frames = sum(r["frames"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    if not rows:
        report = _abandon(stage, out, quarantine)
        raise IngestError(f"nothing usable to ingest: {len(quarantine)} input(s) quarantined "
                          f"(reasons in {report}); sources were {icfg.sources}")
    share = len(quarantine) / max(1, len(quarantine) + n_videos)
    if share > icfg.max_quarantined_fraction:
        report = _abandon(stage, out, quarantine)
        raise IngestError(f"{len(quarantine)} of {len(quarantine) + n_videos} inputs quarantined ({share:.0%}), more than "
                          f"ingest.max_quarantined_fraction ({icfg.max_quarantined_fraction:.0%}): reasons in "
                          f"{report}; the previous dataset is unchanged")
    write_text_atomic(stage / QUARANTINE, json.dumps(quarantine, indent=2) + "\n")
    (out / FAILED_QUARANTINE).unlink(missing_ok=True)  # this attempt succeeds: an older failure's report goes
    digest = shards.write_manifest(stage, rows)
    wall = time.time() - min(r["started"] for r in records)
    per_split = {s: sum(1 for r in rows if r["split"] == s) for s in shards.SPLITS}
    stats = {
        "digest": digest,
        "videos": n_videos,
        "clips": len(rows),
        "frames": n_frames,
        "seconds": round(seconds, 3),
        "quarantined": len(quarantine),
        "quarantined_by_reason": dict(sorted(Counter(reason_kind(q["reason"]) for q in quarantine).items())),
        "skipped": len(skipped),
        "skipped_files": skipped[:MAX_LISTED],
        "clips_per_split": per_split,
    }
    timings = {"wall_seconds": round(wall, 3), "frames_per_second": round(n_frames / wall, 1), "partitions": count}
    write_text_atomic(stage / STATS, json.dumps(stats, indent=2) + "\n")
    stages.write_metrics(stage, stats, timings)
    stats = {**stats, **timings}
    if (parts / SOURCES).is_dir() and parts / SOURCES != out / SOURCES:  # a partitioned run's working folder
        shutil.rmtree(out / SOURCES, ignore_errors=True)
        (parts / SOURCES).rename(out / SOURCES)
    shutil.rmtree(stage / PARTS, ignore_errors=True)
    _swap_in(stage, out)
    shutil.rmtree(parts, ignore_errors=True)  # merged: its partitions are the dataset now
    push_step_metrics(icfg.pushgateway, "ingest",
                      {k: v for k, v in stats.items() if isinstance(v, (int, float))},
                      grouping={"dataset": digest[:12]})
    print(f"ingest: {n_videos} videos -> {len(rows)} clips ({n_frames} frames, {seconds:.1f} s of video) "
          f"in {wall:.1f} s, {stats['frames_per_second']:.0f} frames/s ({count} partition(s)); "
          f"{len(quarantine)} quarantined; digest {digest[:12]}")
    return stats
