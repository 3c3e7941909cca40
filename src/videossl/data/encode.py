"""Writing frames as H.264: the synthetic world's videos go through the same decode path as real footage
(decode.py reads them back), and `ingest.shard_format: h264` keeps clips compressed (data/shards.py)."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videossl.storage import atomic_path

X264_PRESET = "veryfast"  # as small as "fast" here at half the time
YUV_CHUNK = 64  # frames converted to YUV at once


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [..., H, W, 3] -> planar YUV 4:2:0 [..., H*3/2, W] (BT.601, limited range), in exact integer
    math: the file's bytes then depend on the frames and x264 alone, not on swscale's threaded SIMD paths.
    A whole video at once: per frame, the numpy calls' overhead was a fifth of rendering a synthetic video."""
    h, w = rgb.shape[-3:-1]
    lead = rgb.shape[:-3]
    r, g, b = (rgb[..., c].astype(np.int32) for c in range(3))
    y = (66 * r + 129 * g + 25 * b + 128 >> 8) + 16
    # chroma from the 2x2 block average (sum of 4, rounded), as 4:2:0 subsampling does
    r2, g2, b2 = ((c[..., 0::2, 0::2] + c[..., 1::2, 0::2] + c[..., 0::2, 1::2] + c[..., 1::2, 1::2] + 2) >> 2
                  for c in (r, g, b))
    u = (-38 * r2 - 74 * g2 + 112 * b2 + 128 >> 8) + 128
    v = (112 * r2 - 94 * g2 - 18 * b2 + 128 >> 8) + 128
    out = np.empty(lead + (h * 3 // 2, w), np.uint8)
    out[..., :h, :] = np.clip(y, 0, 255)
    out[..., h:h + h // 4, :] = np.clip(u, 0, 255).reshape(lead + (h // 4, w))
    out[..., h + h // 4:, :] = np.clip(v, 0, 255).reshape(lead + (h // 4, w))
    return out


def write_video(frames: np.ndarray, path: Path, fps: int, gop: int, crf: int) -> None:
    """H.264 (libx264, yuv420p) mp4 of `frames` (see h264_bytes), written atomically."""
    data = h264_bytes(frames, fps, gop, crf)
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(data)


def h264_bytes(frames: np.ndarray, fps: float, gop: int, crf: int) -> bytes:
    """`frames` [T, H, W, 3] uint8 as an H.264 (libx264, yuv420p) mp4, a keyframe every `gop` frames.

    Deterministic bytes: one thread, no scene-cut keyframes, no B-frames (decode order = display
    order), no macroblock tree (with it, the same frames gave other bytes after the process had decoded
    other videos: 13 of 130 tiny-world videos at crf 18; without it none did), and the frames arrive as
    YUV made by rgb_to_yuv420p (no colour conversion in the encoder). `crf` 0 is lossless: no quality
    pattern inside a GOP that a reversed clip would show reversed."""
    n_frames, height, width, _ = frames.shape
    if height % 2 or width % 2:  # yuv420p subsamples chroma 2x2, libx264 refuses odd sizes
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height} (use an even size)")
    rate = Fraction(fps).limit_denominator(1001)  # 8.0 -> 8, 29.97 -> 30000/1001
    buffer = io.BytesIO()  # seekable, like a file: the mp4 muxer writes the same bytes to either
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate, options={
            "crf": str(crf), "preset": X264_PRESET,
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:threads=1:mbtree=0",
        })
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        time_base = 1 / rate
        for i in range(n_frames):
            if i % YUV_CHUNK == 0:  # a chunk of frames at once: numpy's per-call cost, bounded memory
                planes = rgb_to_yuv420p(frames[i:i + YUV_CHUNK])
            frame = av.VideoFrame.from_ndarray(planes[i % YUV_CHUNK], format="yuv420p")
            frame.pts, frame.time_base = i, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush
    return buffer.getvalue()
