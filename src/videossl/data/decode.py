"""A small decoder interface: decord first, PyAV when decord cannot read a file.

decord is fast (it decodes straight to a reduced size) but unmaintained, so it stays behind this
interface. Any failure of either decoder surfaces as `DecodeError` with a readable reason, which
ingest turns into a quarantine entry.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DECODE_THREADS = 1  # decord threads per reader: ingest is one video at a time on 2 cores; more threads lose here
# Frames decoded at a time and cropped at once: memory follows one chunk, not the video (a 16-pixel-tall
# video scaled to a 32-pixel short side is 2048 pixels wide per 1024 of its width: a whole long one at
# once was gigabytes before the crop)
CHUNK = 64


class DecodeError(RuntimeError):
    """The file is not a decodable video; the message says why."""


@dataclass(frozen=True)
class Limits:
    """What one video may be, read from its header before any frame is decoded (ingest.max_*): beyond,
    it is refused with the reason, never decoded. With frames decoded in chunks (CHUNK), these bound
    what one file can make a decoder allocate."""
    max_frame_pixels: int
    max_seconds: float
    max_frames: int

    @classmethod
    def of(cls, icfg) -> "Limits":
        """From an IngestConfig (or anything with its max_* fields)."""
        return cls(icfg.max_frame_pixels, icfg.max_seconds, icfg.max_frames)

    def check(self, meta: "VideoMeta") -> None:
        pixels = meta.width * meta.height
        if pixels > self.max_frame_pixels:
            raise DecodeError(f"frames too large: {meta.width}x{meta.height} = {pixels} pixels, more than "
                              f"ingest.max_frame_pixels ({self.max_frame_pixels})")
        if meta.frames > self.max_frames:
            raise DecodeError(f"too many frames: {meta.frames}, more than ingest.max_frames ({self.max_frames})")
        if meta.duration > self.max_seconds:
            raise DecodeError(f"too long: {meta.duration:.0f} s, more than ingest.max_seconds ({self.max_seconds:g})")


@dataclass(frozen=True)
class VideoMeta:
    fps: float    # the container's average rate
    frames: int   # decodable frames
    width: int
    height: int
    # Presentation time (s) of each decodable frame, in display order; None = unknown (then the
    # frames are taken as evenly spaced at `fps`). A variable-frame-rate file is only right with them.
    timestamps: tuple[float, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def frame_seconds(self) -> float:
        """How long one frame shows: the typical gap between timestamps (robust to a few odd ones)."""
        if self.timestamps and len(self.timestamps) > 1:
            gap = float(np.median(np.diff(self.timestamps)))
            if gap > 0:
                return gap
        return 1.0 / self.fps

    @property
    def duration(self) -> float:
        if self.timestamps:
            return self.timestamps[-1] - self.timestamps[0] + self.frame_seconds
        return self.frames / self.fps


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side equal to `short_side`, aspect kept, both even (codec friendly)."""
    scale = short_side / min(width, height)
    w = max(short_side, int(round(width * scale / 2)) * 2)
    h = max(short_side, int(round(height * scale / 2)) * 2)
    return w, h


def resample_indices(meta: VideoMeta, target_fps: float) -> np.ndarray:
    """Source frame nearest in time to each tick of the target clock (drops or repeats frames). With
    timestamps, by presentation time: a variable-frame-rate file keeps its real timing."""
    n = int(math.floor(meta.duration * target_fps + 1e-6))
    times = np.arange(n) / target_fps
    if not meta.timestamps or _evenly_spaced(meta.timestamps):
        # constant frame rate: by index, at the rate the frames really have (the container's own
        # figure unless the timestamps say otherwise)
        rate = meta.fps
        if meta.timestamps and abs(rate * meta.frame_seconds - 1.0) > 0.01:
            rate = 1.0 / meta.frame_seconds
        return np.clip(np.round(times * rate).astype(np.int64), 0, meta.frames - 1)
    pts = np.asarray(meta.timestamps, dtype=np.float64) - meta.timestamps[0]
    right = np.clip(np.searchsorted(pts, times), 0, len(pts) - 1)
    left = np.clip(right - 1, 0, len(pts) - 1)
    nearer_left = np.abs(times - pts[left]) <= np.abs(pts[right] - times)
    return np.where(nearer_left, left, right).astype(np.int64)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frames[:, top:top + size, left:left + size])


class DecordDecoder:
    name = "decord"

    def probe(self, path: Path) -> VideoMeta:
        vr = self._open(path)
        h, w = vr[0].shape[:2] if len(vr) else (0, 0)
        stamps = None
        if len(vr):
            try:
                stamps = tuple(float(t) for t in vr.get_frame_timestamp(range(len(vr)))[:, 0])
            except Exception:  # no usable timestamps: evenly spaced at the average rate
                stamps = None
        return VideoMeta(float(vr.get_avg_fps()), len(vr), int(w), int(h), _monotonic(stamps))

    def read(self, path: Path, indices: np.ndarray, size: tuple[int, int], frames: int | None = None,
             crop: int | None = None) -> np.ndarray:
        vr = self._open(path, size)
        if frames is not None and len(vr) != frames:
            # decord counts the container's frames (dropped ones included): its indices would not be
            # the probed frames' indices
            raise DecodeError(f"decord sees {len(vr)} frames where the stream codes {frames}")
        out = []
        try:
            for i in range(0, len(indices), CHUNK):  # each chunk cropped before the next is decoded
                batch = vr.get_batch(list(map(int, indices[i:i + CHUNK]))).asnumpy()
                if batch.shape[1:] != (size[1], size[0], 3):
                    # decord2 3.0-3.4 returns mis-strided frames at some reduced widths (32 px among them)
                    raise DecodeError(f"decord returned frames of shape {batch.shape[1:]} for {size[0]}x{size[1]}")
                out.append(batch if crop is None else center_crop(batch, crop))
        except DecodeError:
            raise
        except Exception as e:  # decord raises its own DECORDError / RuntimeError types
            raise DecodeError(f"decord could not decode frames: {_first_line(e)}") from e
        return np.concatenate(out)

    @staticmethod
    def _open(path: Path, size: tuple[int, int] | None = None):
        import decord

        try:
            if size is None:
                return decord.VideoReader(str(path), num_threads=DECODE_THREADS)
            return decord.VideoReader(str(path), width=size[0], height=size[1], num_threads=DECODE_THREADS)
        except Exception as e:
            raise DecodeError(f"decord could not open: {_first_line(e)}") from e


class PyAVDecoder:
    name = "pyav"

    def probe(self, path: Path) -> VideoMeta:
        import av

        try:
            with av.open(str(path)) as c:
                if not c.streams.video:
                    raise DecodeError("no video stream")
                s = c.streams.video[0]
                fps = float(s.average_rate or s.guessed_rate or 0)
                # Presentation times from the packets (no frame is decoded). Empty packets are frames
                # the container lists but does not code (an AVI's dropped frames): not frames. Fewer
                # packets than the index lists is a file cut short, not a shorter video.
                packets = [(p.pts if p.pts is not None else p.dts, p.size) for p in c.demux(s)
                           if p.pts is not None or p.dts is not None]
                if s.frames and len(packets) < s.frames:
                    raise DecodeError(f"truncated: the container lists {s.frames} frames, the file holds "
                                      f"{len(packets)}")
                pts = sorted(t for t, size in packets if size)
                stamps = _monotonic(tuple(float(t * s.time_base) for t in pts)) if s.time_base else None
                frames = len(stamps) if stamps else (s.frames or sum(1 for _ in c.decode(s)))
                return VideoMeta(fps, int(frames), s.codec_context.width, s.codec_context.height, stamps)
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"PyAV could not open: {_first_line(e)}") from e

    def read(self, path: Path, indices: np.ndarray, size: tuple[int, int], frames: int | None = None,
             crop: int | None = None) -> np.ndarray:
        import av

        wanted = np.asarray(indices)
        needed = set(wanted.tolist())
        last = int(wanted.max()) if len(wanted) else -1
        decoded: dict[int, np.ndarray] = {}  # only the frames asked for, each cropped as it is decoded
        seen = 0
        try:
            with av.open(str(path)) as c:
                for i, frame in enumerate(c.decode(video=0)):
                    if i > last:
                        break
                    seen = i + 1
                    if i in needed:
                        rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                        decoded[i] = rgb if crop is None else center_crop(rgb[None], crop)[0]
        except Exception as e:
            raise DecodeError(f"PyAV could not decode: {_first_line(e)}") from e
        if seen <= last:
            raise DecodeError(f"stream ends at frame {seen}, container claims more (truncated?)")
        return np.stack([decoded[i] for i in wanted])


class AutoDecoder:
    """Metadata from the container header, frames from decord, PyAV for files decord cannot read.
    Errors name both attempts."""

    name = "auto"

    def __init__(self) -> None:
        self.primary, self.fallback = DecordDecoder(), PyAVDecoder()
        self.used = self.primary.name

    def probe(self, path: Path) -> VideoMeta:
        # Metadata from the container header (PyAV, no frame decoded) when it has it: decord would open
        # the file and decode frame 0 just to learn the size, then open it again to read at that size.
        self.used = self.primary.name
        try:
            return self.fallback.probe(path)
        except DecodeError as pyav_error:
            try:
                return self.primary.probe(path)
            except DecodeError as decord_error:
                self.used = self.fallback.name
                raise DecodeError(f"{decord_error}; {pyav_error}") from decord_error

    def read(self, path: Path, indices: np.ndarray, size: tuple[int, int], frames: int | None = None,
             crop: int | None = None) -> np.ndarray:
        if self.used == self.primary.name:
            try:
                return self.primary.read(path, indices, size, frames, crop)
            except DecodeError as first:
                self.used = self.fallback.name
                try:
                    return self.fallback.read(path, indices, size, frames, crop)
                except DecodeError as second:
                    raise DecodeError(f"{first}; {second}") from second
        return self.fallback.read(path, indices, size, frames, crop)


def _evenly_spaced(stamps: tuple[float, ...], tolerance: float = 0.01) -> bool:
    """Every gap within `tolerance` of the typical one (container time bases round timestamps)."""
    if len(stamps) < 3:
        return True
    gaps = np.diff(stamps)
    typical = float(np.median(gaps))
    return bool(np.all(np.abs(gaps - typical) <= tolerance * typical))


def _monotonic(stamps: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """Timestamps that can time the frames (strictly increasing), else None (evenly spaced instead)."""
    if not stamps or any(b <= a for a, b in zip(stamps, stamps[1:])):
        return None
    return stamps


def make_decoder(name: str):
    return {"auto": AutoDecoder, "decord": DecordDecoder, "pyav": PyAVDecoder}[name]()


def decode_video(path: Path, decoder, fps: float, size: int, limits: Limits) -> tuple[np.ndarray, VideoMeta]:
    """The whole video at `fps`, short side scaled to `size` (at decode time), centre-cropped square;
    refused unread when its header says it is beyond `limits`."""
    try:
        meta = decoder.probe(path)
        if meta.frames < 1 or meta.fps <= 0 or meta.width <= 0:
            raise DecodeError(f"no decodable frames (frames={meta.frames}, fps={meta.fps})")
        limits.check(meta)
        indices = resample_indices(meta, fps)
        if len(indices) == 0:
            what = "a single frame" if meta.frames == 1 else f"{meta.frames} frames"
            raise DecodeError(f"too short: {what} ({meta.duration:.3f} s), less than one frame at {fps:g} fps")
        frames = decoder.read(path, indices, scaled_size(meta.width, meta.height, size), meta.frames, crop=size)
    except DecodeError as e:
        # The decoders' own words for a cut-off file ("Invalid data found") do not say what is wrong.
        problem = mp4_structure_problem(path)
        if problem:
            raise DecodeError(f"{problem} ({e})") from e
        raise
    return frames, meta


def mp4_structure_problem(path: Path) -> str | None:
    """What is wrong with an mp4/mov file's top-level boxes (truncated, no moov index), or None.

    Only files that start with an ISO-BMFF `ftyp` box are judged; anything else gives None.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            pos, kinds = 0, []
            while pos + 8 <= size:
                f.seek(pos)
                head = f.read(16)
                n, kind = int.from_bytes(head[:4], "big"), head[4:8].decode("latin-1")
                if pos == 0 and kind != "ftyp":
                    return None
                if n == 1:  # 64-bit box size follows the type
                    n = int.from_bytes(head[8:16], "big") if len(head) == 16 else 0
                elif n == 0:  # box runs to the end of the file
                    n = size - pos
                if n < 8:
                    return f"corrupt mp4: box '{kind}' at byte {pos} has an invalid size"
                if pos + n > size:
                    return (f"truncated mp4: box '{kind}' at byte {pos} needs {n} bytes, "
                            f"the file ends after {size - pos}")
                kinds.append(kind)
                pos += n
    except OSError:
        return None
    if not kinds:  # under 8 bytes: not judged as an mp4
        return None
    if "moov" not in kinds:
        return "incomplete mp4: no 'moov' box (the index), the file was cut off or never finished"
    return None


# decoder internals a user cannot act on: "[12:01:02] /src/video/video_reader.cc:83: " and the like
_INTERNALS = re.compile(r"\[\d{2}:\d{2}:\d{2}\]\s*|\S+\.(?:cc|cpp|cxx|h|hpp|c):\d+:?\s*")


def _first_line(e: BaseException) -> str:
    """One readable line of a decoder's error: its first line, without timestamps and C++ source paths."""
    text = [t for t in (_INTERNALS.sub("", line).strip() for line in str(e).splitlines()) if t]
    return (text[0] if text else type(e).__name__)[:300]
