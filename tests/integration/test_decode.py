"""The decoder interface on real files: decord and PyAV agree, variable frame rates and dropped frames
keep their timing, errors name what is wrong, and the auto decoder falls back to PyAV where decord
0.6.0 fails."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from videossl.config import IngestConfig, SyntheticConfig
from videossl.data import synthetic
from videossl.data.encode import write_video
from videossl.data.decode import (AutoDecoder, DecodeError, DecordDecoder, Limits, PyAVDecoder, VideoMeta, decode_video,
                                    mp4_structure_problem, resample_indices, scaled_size)
from videossl.data.sources import samples_dir

LIMITS = Limits.of(IngestConfig())  # ingest's defaults

CLIP = SyntheticConfig(seconds=1, fps=24, size=64, gop=8, crf=18)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 64x64, 24-frame synthetic H.264 file and the frames it was encoded from."""
    frames, _ = synthetic.render_video(5, CLIP)
    path = tmp_path_factory.mktemp("decode") / "synth.mp4"
    write_video(frames, path, CLIP.fps, CLIP.gop, CLIP.crf)
    return path, frames


def test_decord_and_pyav_agree(synth):
    path, source = synth
    assert DecordDecoder().probe(path) == PyAVDecoder().probe(path) == VideoMeta(24.0, 24, 64, 64)
    for size in (64, 32):
        a, meta = decode_video(path, DecordDecoder(), 12, size, LIMITS)
        b, _ = decode_video(path, PyAVDecoder(), 12, size, LIMITS)
        assert a.shape == b.shape == (12, size, size, 3) and a.dtype == b.dtype == np.uint8
        diff = np.abs(a.astype(np.int16) - b).mean()
        assert diff < 2.0, f"decord and PyAV differ by {diff:.2f} grey levels at size {size}"
    # and both are the encoded frames (up to H.264 at crf 18), every second one at half the rate
    native, _ = decode_video(path, DecordDecoder(), 12, 64, LIMITS)
    assert np.abs(native.astype(np.int16) - source[::2]).mean() < 4.0


def test_non_square_real_video_is_scaled_then_center_cropped():
    bikes = samples_dir() / "bikes.mp4"  # 640x272, 25 fps, 250 frames
    meta = DecordDecoder().probe(bikes)
    assert (meta.width, meta.height, meta.fps, meta.frames) == (640, 272, 25.0, 250)
    frames, _ = decode_video(bikes, DecordDecoder(), 12, 32, LIMITS)
    assert frames.shape == (120, 32, 32, 3)
    # the crop is the middle of the scaled frame: same pixels as decoding at (76, 32) and cutting columns 22:54
    idx = resample_indices(meta, 12)[:4]
    full = DecordDecoder().read(bikes, idx, scaled_size(640, 272, 32))
    assert full.shape == (4, 32, 76, 3)
    assert np.array_equal(frames[:4], full[:, :, 22:54])


def test_auto_decoder_falls_back_to_pyav_where_decord_fails(tmp_path):
    # decord 0.6.0 reports 4 channels for frames exactly 16, 24, 48 or 72 pixels wide and fails to copy them
    cfg = SyntheticConfig(seconds=1, fps=24, size=96, gop=8, crf=18)
    source, _ = synthetic.render_video(9, cfg)
    path = tmp_path / "v96.mp4"
    write_video(source, path, cfg.fps, cfg.gop, cfg.crf)
    with pytest.raises(DecodeError, match="decord could not decode"):
        decode_video(path, DecordDecoder(), 12, 48, LIMITS)

    auto = AutoDecoder()
    frames, meta = decode_video(path, auto, 12, 48, LIMITS)
    assert auto.used == "pyav"
    assert frames.shape == (12, 48, 48, 3) and frames.dtype == np.uint8
    expected, _ = decode_video(path, PyAVDecoder(), 12, 48, LIMITS)
    assert np.array_equal(frames, expected)
    # and they are the right frames: the source, every second one, 2x2 box-downscaled
    reference = source[resample_indices(meta, 12)].reshape(12, 48, 2, 48, 2, 3).mean(axis=(2, 4))
    error = np.abs(frames - reference).mean()  # codec (crf 18) and scaling error: a few grey levels
    assert error < 6.0 and error < 0.5 * np.abs(frames[1:] - reference[:-1]).mean()  # well below a frame off
    # decord keeps working where it can: the next file is read by decord again
    auto.probe(path)
    assert auto.used == "decord"


def test_errors_name_what_is_wrong(synth, tmp_path):
    path, _ = synth
    assert mp4_structure_problem(path) is None
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in mp4_structure_problem(cut)
    with pytest.raises(DecodeError, match="truncated mp4"):
        decode_video(cut, AutoDecoder(), 12, 32, LIMITS)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    assert mp4_structure_problem(text) is None
    with pytest.raises(DecodeError, match="decord could not open.*; PyAV could not open"):
        decode_video(text, AutoDecoder(), 12, 32, LIMITS)


# ---- timing: variable frame rates and frames a container lists but does not code -----------------

# A variable-frame-rate file: a burst of frames 20 ms apart, then a 300 ms hold, then 100 ms apart
VFR_TIMES = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90)


def _level_frames(n: int, size: int = 64) -> np.ndarray:
    """Frame i is a flat grey at 20 * i: which source frame a decoded frame is reads off its mean."""
    return np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 20, size * size * 3).reshape(n, size, size, 3)


def _write_timed(path: Path, times: tuple[float, ...], codec: str, drop: tuple[int, ...] = ()) -> None:
    """Frames with these presentation times (an mp4 in ms, an AVI in its 100 ms frame slots); frames
    in `drop` are written as the empty packets an AVI uses for dropped frames (listed, never coded)."""
    import av
    from fractions import Fraction

    frames = _level_frames(len(times))
    tick = 1000 if codec == "libx264" else 10
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, tick)
        if codec == "libx264":
            stream.options = {"crf": "10", "bf": "0"}
        else:
            stream.codec_context.qmax = 2
        for i, (t, rgb) in enumerate(zip(times, frames)):
            if i in drop:
                packet = av.Packet(b"")
                packet.stream, packet.time_base = stream, stream.time_base
                packet.pts = packet.dts = round(t * tick)
                out.mux(packet)
                continue
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = round(t * tick), Fraction(1, tick)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _source_of(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 20)) for f in frames]


def _nearest(times: tuple[float, ...], fps: float, n: int) -> list[int]:
    return [int(np.argmin([abs(t - k / fps) for t in times])) for k in range(n)]


@pytest.mark.parametrize("decoder", [AutoDecoder, PyAVDecoder, DecordDecoder])
def test_a_variable_frame_rate_file_is_resampled_by_its_timestamps(tmp_path, decoder):
    path = tmp_path / "vfr.mp4"
    _write_timed(path, VFR_TIMES, "libx264")
    frames, meta = decode_video(path, decoder(), 10, 32, LIMITS)
    assert meta.frames == len(VFR_TIMES)
    assert meta.duration == pytest.approx(1.0, abs=0.02)  # 0.9 s to the last frame + its 100 ms
    # each output tick (every 100 ms) shows the source frame nearest to it in time: the 20 ms burst
    # collapses into ticks 0 and 0.1 s, and the hold (0.1 to 0.4 s) repeats frames 5 and 6;
    # resampling by index at the average rate would walk through the burst as if it were 100 ms apart
    assert _source_of(frames) == _nearest(VFR_TIMES, 10, len(frames))
    assert _source_of(frames)[:5] == [0, 5, 5, 6, 6]


def test_an_avi_that_lists_dropped_frames_decodes_with_its_real_timing(tmp_path):
    times = tuple(i / 10 for i in range(12))
    path = tmp_path / "dropped.avi"
    _write_timed(path, times, "mpeg4", drop=(3, 4, 8))
    auto = AutoDecoder()
    frames, meta = decode_video(path, auto, 10, 32, LIMITS)  # not quarantined as truncated
    coded = [i for i in range(12) if i not in (3, 4, 8)]
    assert meta.frames == len(coded)
    # a dropped frame's tick shows the coded frame nearest in time (the one before it, or after)
    expected = [coded[j] for j in _nearest(tuple(times[i] for i in coded), 10, len(frames))]
    assert _source_of(frames) == expected
    assert len(frames) == 12


@pytest.mark.parametrize("limits, reason", [
    (Limits(max_frame_pixels=64 * 64 - 1, max_seconds=3600, max_frames=1000), "frames too large: 64x64 = 4096 pixels"),
    (Limits(max_frame_pixels=10**8, max_seconds=3600, max_frames=23), "too many frames: 24"),
    (Limits(max_frame_pixels=10**8, max_seconds=0.5, max_frames=1000), "too long: 1 s"),
])
def test_a_video_beyond_the_limits_is_refused_from_its_header(synth, limits, reason, monkeypatch):
    """The header says how large, long and many the frames are: beyond ingest.max_*, nothing is decoded."""
    path, _ = synth
    monkeypatch.setattr(DecordDecoder, "read", lambda *a, **k: pytest.fail("decoded a refused video"))
    monkeypatch.setattr(PyAVDecoder, "read", lambda *a, **k: pytest.fail("decoded a refused video"))
    with pytest.raises(DecodeError, match=reason) as e:
        decode_video(path, AutoDecoder(), 12, 32, limits)
    assert "ingest.max_" in str(e.value)



class _MisStrided:
    """A decord VideoReader as decord2 3.x behaves at 32 px: each frame's rows hold twice the bytes."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def get_batch(self, indices):
        class Batch:
            def asnumpy(_self):
                return np.zeros((len(indices), 32, 32, 6), np.uint8)
        return Batch()


def test_mis_strided_decord_frames_are_refused_and_pyav_decodes_instead(synth, monkeypatch):
    """decord2 (the ARM dependency) returns (32, 32, 6) frames at 32 px: the decoder names the shape
    and the automatic decoder reads the file with PyAV, never passing a wrong array on."""
    from videossl.data.decode import AutoDecoder, DecodeError

    path, _ = synth
    monkeypatch.setattr(DecordDecoder, "_open", staticmethod(lambda p, size=None: _MisStrided(24)))
    with pytest.raises(DecodeError, match=r"decord returned frames of shape \(32, 32, 6\) for 32x32"):
        DecordDecoder().read(path, np.arange(12), (32, 32), frames=24)
    auto = AutoDecoder()
    frames, _ = decode_video(path, auto, 12, 32, LIMITS)
    assert frames.shape == (12, 32, 32, 3) and auto.used == "pyav"
