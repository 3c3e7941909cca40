"""Ingest step: raw videos -> decoded, resampled clip shards + manifest + quarantine report + stats.

Every bad input (empty, truncated, not a video, too short, unreadable, missing in S3) is skipped and
recorded with its reason; the rest is ingested. Only when nothing usable remains does the step fail.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

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


def _decode_job(job: tuple[sources.VideoInput, IngestConfig, Path]) -> tuple[np.ndarray | None, str | None, bool]:
    """(frames, None, _) of one video, or (None, the reason it cannot be used, whether the reason is a
    decoding verdict): run in decode worker processes, so every failure comes back as a value."""
    video, icfg, cache = job
    try:
        return _load_frames(video, icfg, make_decoder(icfg.decoder), cache), None, True
    except (DecodeError, OSError) as e:
        return None, str(e), True
    except Exception as e:  # botocore errors while downloading, etc.: quarantine, keep going
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", False


def decoded(inputs: list[sources.VideoInput], icfg: IngestConfig, cache: Path, workers: int):
    """Yields (video, frames, reason, decode_verdict) in input order, decoding in `workers` processes
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
    staging folder and swap shards under each other's manifest)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with processes.run_lock(out):
            return _ingest(cfg, out)
    except processes.Busy as e:
        raise IngestError(str(e)) from None


def _ingest(cfg: Config, out: Path) -> dict:
    icfg = cfg.ingest
    # The new dataset is built beside the old one and swapped in at the end: a failed, killed or
    # out-of-space ingest leaves the previous dataset whole (see _swap_in).
    stage = staging_dir(out)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    t0 = time.perf_counter()

    skipped: list[str] = []
    inputs, rejected = sources.expand_sources(icfg, out / "sources", skipped)
    for path in skipped:
        log.warning("skipped %s: not a video file extension (%s)", path, ", ".join(sources.VIDEO_EXTENSIONS))
    quarantine: list[dict] = []
    for r in rejected:
        _quarantine(quarantine, r.uri, r.reason)

    writer = shards.ShardWriter(stage, icfg.shard_frames)
    rows: list[dict] = []
    n_videos = n_frames = 0
    seconds = 0.0
    t_clip = icfg.clip_frames
    ordered = sorted(inputs, key=lambda v: v.source_id)
    workers = min(icfg.workers or os.cpu_count() or 1, len(ordered))
    for video, frames, reason, verdict in Progress(decoded(ordered, icfg, stage / DOWNLOADS, workers),
                                                   total=len(ordered), desc="ingest", unit="videos"):
        if reason is not None:
            if "NoSuchBucket" in reason:  # the bucket went away mid-run: every later video would fail too
                _abandon(stage, out)
                raise IngestError(f"{video.uri}: the bucket no longer exists (deleted mid-run?); the previous "
                                  f"dataset in {out} is unchanged") from None
            if not verdict and ("404" in reason or "NoSuchKey" in reason):
                reason = "missing s3 key"
            _quarantine(quarantine, video.uri, reason)
            continue
        try:
            split = shards.split_of(video.group, icfg.splits, cfg.seed, video.labels.get("split"))
        except ValueError as e:  # a label sidecar that names a split that does not exist
            _quarantine(quarantine, video.uri, f"bad label sidecar: {e}")
            continue
        shard_name, offset = writer.add(frames)
        for start in range(0, len(frames) - t_clip + 1, icfg.clip_stride):
            rows.append({
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
            })
        n_videos += 1
        n_frames += len(frames)
        seconds += len(frames) / icfg.fps
    writer.flush()
    shutil.rmtree(stage / DOWNLOADS, ignore_errors=True)

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
    wall = time.perf_counter() - t0
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
    timings = {"wall_seconds": round(wall, 3), "frames_per_second": round(n_frames / wall, 1)}
    write_text_atomic(stage / STATS, json.dumps(stats, indent=2) + "\n")
    stages.write_metrics(stage, stats, timings)
    stats = {**stats, **timings}
    _swap_in(stage, out)
    push_step_metrics(icfg.pushgateway, "ingest",
                      {k: v for k, v in stats.items() if isinstance(v, (int, float))},
                      grouping={"dataset": digest[:12]})
    print(f"ingest: {n_videos} videos -> {len(rows)} clips ({n_frames} frames, {seconds:.1f} s of video) "
          f"in {wall:.1f} s, {stats['frames_per_second']:.0f} frames/s; {len(quarantine)} quarantined; "
          f"digest {digest[:12]}")
    return stats
