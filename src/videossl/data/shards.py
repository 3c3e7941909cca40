"""Clip shards: uint8 frames in shard files plus a manifest with one row per clip.

A shard holds whole videos (resampled, resized, cropped), one after another, as [F, H, W, 3] uint8:
one .npy array (`ingest.shard_format: npy`), or a tar of WebDataset-style samples, one per video
(`tar`: `<key>.npy` its frames, `<key>.json` its source, kind, split, group and labels), which `tar`,
`webdataset` and any tar reader open as they are; both are memory-mapped the same way for reading.
`h264` keeps each video compressed in such a tar (`<key>.mp4`: H.264 at the dataset's size and fps,
a keyframe every `ingest.h264.gop` frames), decoded where it is read (the loader's workers): a 27th
to a 40th of the bytes (measured: docs/performance.md), for a decode per window.
A manifest row points at a clip: the video's frame offset in its shard plus the clip's start. Storing
videos rather than cut clips keeps overlapping clips from being stored twice and lets readers take
the same window at another playback speed (every 2nd/4th frame) or a later clip of the same video.
The dataset's identity is the digest of its manifest, which includes each clip's content digest.
"""
from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videossl.errors import StepError
from videossl.storage import atomic_path, write_text_atomic

MANIFEST = "manifest.jsonl"
STATS = "ingest.json"  # the ingest record: dataset digest, counts, what was skipped
SHARDS = "shards"
SPLITS = ("train", "val", "test")
# What a video is for (the manifest's `kind`): the synthetic benchmark world is evaluated on and never
# pretrained on; the synthetic pool is pretrained on and never evaluated on; real footage is both.
BENCHMARK, POOL, REAL = "benchmark", "pool", "real"
LABELLED = "labelled"  # a labelled list's videos (data/lists.py): the classification task's, never pretraining's


def split_of(group: str, fractions: dict[str, float], seed: int, assigned: str | None = None) -> str:
    """The split a video's labels assign (the synthetic worlds' stratified design), else a
    deterministic hash of its source group, so adding videos never moves existing ones."""
    if assigned is not None:
        if assigned not in SPLITS:
            raise ValueError(f"split {assigned!r} is not one of {SPLITS}")
        return assigned
    h = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:12], 16) / float(16 ** 12)
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if h < edge:
            return name
    return SPLITS[-1]


def clip_digest(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()[:16]


def dataset_digest(data_dir: str | os.PathLike) -> str:
    """The digest ingest recorded in `data_dir/ingest.json` ("unknown" without one)."""
    stats = Path(data_dir) / STATS
    return json.loads(stats.read_text()).get("digest", "unknown") if stats.is_file() else "unknown"


def manifest_digest(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


# Shard numbers of ingest chunk k start at k * CHUNK_SHARDS: a chunk's shards are named the same
# whichever partition wrote them (chunk 0's are shard_00000.npy, shard_00001.npy, ...).
CHUNK_SHARDS = 100_000


# ingest.shard_format -> its files' suffix: one array per shard; WebDataset-style samples in a tar, each
# video's frames as .npy or compressed as .mp4 (H.264)
SHARD_SUFFIX = {"npy": ".npy", "tar": ".tar", "h264": ".h264.tar"}
SHARD_FORMATS = tuple(SHARD_SUFFIX)


class ShardWriter:
    """Appends whole videos to shard files of about `shard_frames` frames, written atomically;
    `chunk`: the ingest chunk these videos are (its shards' numbers start at chunk * CHUNK_SHARDS);
    `fmt`: one of SHARD_FORMATS. A video's place is its frame offset in the shard in every format.
    An h264 shard's videos come encoded (`payload`, made where they were decoded: data/encode.h264_bytes)."""

    def __init__(self, out_dir: Path, shard_frames: int, chunk: int = 0, fmt: str = "npy"):
        if fmt not in SHARD_FORMATS:
            raise ValueError(f"shard format {fmt!r} is not one of {SHARD_FORMATS}")
        self.dir = Path(out_dir) / SHARDS
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_frames, self.fmt = shard_frames, fmt
        self.pending: list[tuple[np.ndarray, dict]] = []
        self.pending_frames = 0
        self.index = self.first = chunk * CHUNK_SHARDS

    @property
    def current_name(self) -> str:
        return f"shard_{self.index:05d}{SHARD_SUFFIX[self.fmt]}"

    def add(self, frames: np.ndarray, sample: dict | None = None, payload: bytes | None = None) -> tuple[str, int]:
        """Queue a video (`sample`: what a tar shard's `<key>.json` says of it; `payload`: the video as
        an mp4, for an h264 shard); returns (shard file name, frame offset of the video in it)."""
        if (payload is None) == (self.fmt == "h264"):
            raise ValueError(f"a {self.fmt} shard {'needs' if payload is None else 'takes no'} encoded video")
        if self.pending and self.pending_frames + len(frames) > self.shard_frames:
            self.flush()
        if self.index - self.first >= CHUNK_SHARDS:
            raise ValueError(f"an ingest chunk needs more than {CHUNK_SHARDS} shards: lower ingest.chunk_videos")
        loc = (self.current_name, self.pending_frames)
        sample = dict(sample or {})
        if payload is not None:  # the frame count, which the mp4 would give only by parsing it
            sample["frames"] = len(frames)
        self.pending.append((frames if payload is None else payload, sample))
        self.pending_frames += len(frames)
        return loc

    def flush(self) -> None:
        if not self.pending:
            return
        with atomic_path(self.dir / self.current_name) as tmp:
            if self.fmt == "npy":
                with open(tmp, "wb") as f:
                    np.save(f, np.concatenate([frames for frames, _ in self.pending]))
            else:
                _write_tar(tmp, self.pending)
        self.index += 1
        self.pending, self.pending_frames = [], 0


def _write_tar(path: Path, samples: list[tuple[np.ndarray | bytes, dict]]) -> None:
    """A tar of WebDataset samples: per video `<key>.npy` (its frames) or `<key>.mp4` (its encoded
    bytes), then `<key>.json`, keys in order."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for k, (video, sample) in enumerate(samples):
            if isinstance(video, bytes):
                body, ext = video, "mp4"
            else:
                array = io.BytesIO()
                np.save(array, video)
                body, ext = array.getvalue(), "npy"
            for suffix, data in ((ext, body), ("json", json.dumps(sample, sort_keys=True).encode())):
                info = tarfile.TarInfo(f"{k:06d}.{suffix}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644  # no clock in the bytes: reruns are identical
                tar.addfile(info, io.BytesIO(data))


class TarFrames:
    """A tar shard's videos as one frame axis, like a .npy shard's: the file is memory-mapped once and
    each `<key>.npy` member is a view into it (one mapping per shard, not per video)."""

    def __init__(self, path: str | os.PathLike):
        whole = np.memmap(path, dtype=np.uint8, mode="r")
        self.starts, self.parts, start = [], [], 0
        with tarfile.open(path) as tar, open(path, "rb") as f:
            for member in (m for m in tar if m.name.endswith(".npy")):
                f.seek(member.offset_data)
                version = np.lib.format.read_magic(f)
                shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)(f)
                data = f.tell()
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                self.starts.append(start)
                self.parts.append(whole[data:data + nbytes].view(dtype).reshape(shape))
                start += shape[0]
        self.shape = (start, *(self.parts[0].shape[1:] if self.parts else ()))

    def __getitem__(self, window: slice) -> np.ndarray:
        """Frames start:stop:step of one video (a window never crosses videos)."""
        i = bisect.bisect_right(self.starts, window.start) - 1
        base = self.starts[i]
        return self.parts[i][window.start - base:window.stop - base:window.step]


class H264Frames:
    """An h264 shard's videos as one frame axis: the tar is memory-mapped once, and a window is decoded
    from its video's `<key>.mp4` member when it is read (decord, or PyAV where decord is missing). The
    last few videos' readers are kept open: windows of one video come in runs (pretrain.shard_window)."""

    READERS = 8  # open readers kept per shard (each holds its video's compressed bytes and a decoder)

    def __init__(self, path: str | os.PathLike):
        self.whole = np.memmap(path, dtype=np.uint8, mode="r")
        self.starts, self.spans, start = [], [], 0
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar}
            for name in sorted(n for n in members if n.endswith(".mp4")):
                mp4, meta = members[name], members[name[:-len("mp4")] + "json"]
                frames = int(json.loads(tar.extractfile(meta).read())["frames"])
                self.starts.append(start)
                self.spans.append((mp4.offset_data, mp4.offset_data + mp4.size))
                start += frames
        self._readers: dict[int, object] = {}
        self.shape = (start,)

    def __getitem__(self, window: slice) -> np.ndarray:
        """Frames start:stop:step of one video (a window never crosses videos), decoded."""
        i = bisect.bisect_right(self.starts, window.start) - 1
        base = self.starts[i]
        indices = range(window.start - base, window.stop - base, window.step or 1)
        return decode_h264(self._reader(i), indices)

    def _reader(self, i: int):
        reader = self._readers.pop(i, None)
        if reader is None:
            begin, end = self.spans[i]
            reader = h264_reader(bytes(self.whole[begin:end]))
            if len(self._readers) >= self.READERS:
                self._readers.pop(next(iter(self._readers)))  # the least recently used
        self._readers[i] = reader
        return reader


def h264_reader(mp4: bytes):
    """A random-access reader of an mp4's frames: decord's, or the bytes themselves for PyAV."""
    try:
        import decord
    except ImportError:
        return mp4
    return decord.VideoReader(io.BytesIO(mp4), num_threads=1)


def decode_h264(reader, indices) -> np.ndarray:
    """Frames `indices` [n, H, W, 3] uint8 of an h264_reader (PyAV decodes from the start, as it must
    without an index; decord seeks to the keyframe before the first)."""
    indices = list(indices)
    if not isinstance(reader, bytes):
        return reader.get_batch(indices).asnumpy()
    import av

    wanted, last, out = set(indices), max(indices), {}
    with av.open(io.BytesIO(reader)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                out[k] = frame.to_ndarray(format="rgb24")
            if k >= last:
                break
    return np.stack([out[k] for k in indices])


def open_shard(path: str | os.PathLike) -> "np.ndarray | TarFrames | H264Frames":
    """A shard's frames, memory-mapped: [F, H, W, 3] of a .npy shard, a tar shard's TarFrames, or an
    h264 shard's H264Frames (decoded on read)."""
    if str(path).endswith(SHARD_SUFFIX["h264"]):
        return H264Frames(path)
    return TarFrames(path) if str(path).endswith(".tar") else np.load(path, mmap_mode="r")


def write_manifest(out_dir: Path, rows: list[dict]) -> str:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    write_text_atomic(Path(out_dir) / MANIFEST, text)
    return manifest_digest(rows)


def read_manifest(data_dir: Path) -> list[dict]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no clip manifest at {path}: run the ingest step first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Video:
    source_id: str
    kind: str
    split: str
    labels: dict
    shard: str
    offset: int
    frames: int
    clip_starts: tuple[int, ...]
    group: str = ""  # split group: videos of one footage (e.g. carphone pristine/distorted) share it


# Shard readers a forked process inherited from its parent, kept alive and unused: an h264 shard's decord
# readers own decoder threads that fork did not copy, and destroying one in the child waits on them forever.
_INHERITED: list[dict] = []


class DatasetError(StepError, ValueError):
    """An ingested dataset that cannot be read as its manifest says (the message names what and why)."""


class ClipStore:
    """Read access to an ingested dataset: videos, clips, and windows at any frame step.

    Shards are memory-mapped once per process, so a DataLoader worker reads only the pages it needs.
    """

    def __init__(self, data_dir: str | os.PathLike):
        self.dir = Path(data_dir)
        self.rows = read_manifest(self.dir)
        if not self.rows:
            raise ValueError(f"{self.dir / MANIFEST} has no clips")
        self.clip_frames = int(self.rows[0]["shape"][0])
        self.size = int(self.rows[0]["shape"][1])
        starts: dict[str, list[int]] = defaultdict(list)
        first: dict[str, dict] = {}
        for r in self.rows:
            starts[r["source_id"]].append(int(r["start"]))
            first.setdefault(r["source_id"], r)
        self.videos = [Video(sid, r["kind"], r["split"], r["labels"], r["shard"], int(r["offset"]),
                             int(r["video_frames"]), tuple(sorted(starts[sid])), r.get("group", sid))
                       for sid, r in sorted(first.items())]
        self.by_id = {v.source_id: v for v in self.videos}
        self._maps: dict[str, np.ndarray] = {}
        self._pid = os.getpid()  # whose maps these are: a forked loader worker opens its own
        from videossl.data import remote  # (it imports this module)

        # shards streamed from where the dataset was published, into a bounded cache (data/remote.py)
        self._remote = remote.ShardCache.read(self.dir) if (self.dir / remote.REMOTE).is_file() else None
        self._verify()

    def _verify(self) -> None:
        """Every shard the manifest names is there and holds every frame its videos need, checked from
        the shards' headers when the dataset is opened: a manifest beside shards that are not its own
        (an interrupted or concurrent ingest) fails here, naming them, not when a clip is first read."""
        need: dict[str, int] = defaultdict(int)
        for v in self.videos:
            need[v.shard] = max(need[v.shard], v.offset + v.frames)
        if self._remote is not None:  # streamed: checked against the published listing, nothing fetched
            frame_bytes = self.size * self.size * 3
            for name, frames in sorted(need.items()):
                entry = self._remote.files.get(name)
                compressed = name.endswith(SHARD_SUFFIX["h264"])  # its size says nothing of its frames
                if entry is None or (not compressed and int(entry["size"]) < frames * frame_bytes):
                    raise DatasetError(f"{self.dir / MANIFEST} needs {frames} frames of shard {name}, which "
                                       f"{self._remote.uri} {'does not list' if entry is None else 'is too small for'}: "
                                       "the shards are not this manifest's")
            return
        for name, frames in sorted(need.items()):
            try:  # the header only: nothing is kept mapped (a pickled store would carry every mapped shard)
                have = open_shard(self.dir / SHARDS / name).shape[0]
            except (OSError, ValueError) as e:
                raise DatasetError(f"{self.dir / MANIFEST} names shard {name}, which cannot be read "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): run the ingest step "
                                 f"again") from None
            if have < frames:
                raise DatasetError(f"{self.dir / MANIFEST} needs {frames} frames of shard {name}, which holds {have}: "
                                 f"the shards are not this manifest's; run the ingest step again")

    def __getstate__(self) -> dict:
        """Pickled (to a worker process) without its memory maps: a pickled map is its whole shard's data;
        each process maps what it reads."""
        return {**self.__dict__, "_maps": {}}

    def _shard(self, name: str) -> np.ndarray:
        if self._pid != os.getpid():  # forked (a DataLoader worker): open this process's own
            _INHERITED.append(self._maps)  # never destroyed here: see _INHERITED
            self._maps, self._pid = {}, os.getpid()
        arr = self._maps.get(name)
        if arr is None:
            if self._remote is None:
                path = self.dir / SHARDS / name
            else:
                path = self._remote.path(name)
                resident = self._remote.resident()
                for evicted in [k for k in self._maps if k not in resident]:
                    del self._maps[evicted]  # its file left the cache: let the map go, and the disk with it
            arr = self._maps[name] = open_shard(path)
        return arr

    @property
    def fetches(self) -> int:
        """Shards this process downloaded (0 for a local dataset)."""
        return self._remote.fetches if self._remote is not None else 0

    def videos_in(self, split: str | None = None, kind: str | None = None) -> list[Video]:
        return [v for v in self.videos if (split is None or v.split == split) and (kind is None or v.kind == kind)]

    def pretraining_videos(self, split: str = "train", real: bool = False) -> list[Video]:
        """What the encoders may train on: the pool's videos of `split`, and real footage only with `real`
        (pretrain.real_footage): the benchmark world never, and real footage is evaluation footage
        (real_arrow_of_time) unless asked for."""
        return [v for v in self.videos_in(split) if v.kind == POOL or (real and v.kind == REAL)]

    def window(self, video: Video, start: int, frames: int, step: int = 1) -> np.ndarray:
        """`frames` frames from `start`, every `step`-th one: uint8 [frames, H, W, 3] (a copy)."""
        end = start + (frames - 1) * step + 1
        if start < 0 or end > video.frames:
            raise IndexError(f"window {start}:{end}:{step} outside {video.source_id} ({video.frames} frames)")
        shard = self._shard(video.shard)
        return np.array(shard[video.offset + start: video.offset + end: step])
