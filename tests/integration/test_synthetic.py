"""The synthetic world's videos: real decodable, lossless H.264 files, written atomically, in parallel
with the same bytes, remade only when they changed."""
from __future__ import annotations

import json
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from videossl.config import SyntheticConfig
from videossl.data import synthetic as S
from videossl.data.encode import rgb_to_yuv420p, write_video

SMALL = SyntheticConfig(seconds=1.0, fps=8, size=32, max_objects=3, gop=4, workers=1,
                        benchmark={"families": {"bounce": 2, "permanence": 1}, "seed": 7},
                        pool={"families": {"bounce": 2, "glide": 1, "launch": 1}, "seed": 8})
SEGMENT = 8
def _decode_pyav(path: Path) -> tuple[np.ndarray, av.video.stream.VideoStream, list[bool]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [p.is_keyframe for p in container.demux(stream) if p.size > 0]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return frames, stream, keyframes


# ----------------------------------------------------------------------------------------------
# encoded files


def test_generate_writes_decodable_lossless_mp4_and_json(tmp_path):
    paths = S.generate(SMALL, "benchmark", tmp_path, SEGMENT)
    assert paths == [tmp_path / "bounce/00000.mp4", tmp_path / "bounce/00001.mp4", tmp_path / "permanence/00000.mp4"]
    for unit, path in zip(S.plan(SMALL, "benchmark"), paths):
        labels = json.loads(path.with_suffix(".json").read_text())
        made = S.make_unit(unit, SMALL, SEGMENT)
        rendered, expected = made.frames, json.loads(json.dumps(made.labels))
        assert labels == expected and labels["split"] == unit.split
        vr = decord.VideoReader(str(path))
        decoded = vr.get_batch(list(range(len(vr)))).asnumpy()
        assert decoded.shape == rendered.shape and vr.get_avg_fps() == pytest.approx(SMALL.fps)
        # crf 0 is lossless: the decoded YUV planes are exactly what was encoded, so there is no
        # quality pattern inside a GOP for a reversed clip to show; what the RGB frames still differ
        # by is the colour conversion, the same for every frame
        with av.open(str(path)) as container:
            yuv = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
        assert all(np.array_equal(y, rgb_to_yuv420p(f)) for y, f in zip(yuv, rendered))
        assert np.abs(decoded.astype(np.float32) - rendered).mean() < 3.0
        frames, stream, _ = _decode_pyav(path)
        assert frames.shape == rendered.shape and stream.codec_context.pix_fmt == "yuv420p"
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave nothing behind


def test_parallel_generation_writes_the_same_bytes(tmp_path):
    serial = S.generate(SMALL, "pool", tmp_path / "serial", SEGMENT)
    parallel = S.generate(SMALL.model_copy(update={"workers": 2}), "pool", tmp_path / "parallel", SEGMENT)
    assert [p.read_bytes() for p in serial] == [p.read_bytes() for p in parallel]
    assert [p.with_suffix(".json").read_text() for p in serial] == [p.with_suffix(".json").read_text() for p in parallel]


def test_generate_skips_up_to_date_videos_and_redoes_changed_ones(tmp_path):
    paths = S.generate(SMALL, "pool", tmp_path, SEGMENT)
    stamps = [p.stat().st_mtime_ns for p in paths]
    seen = []
    assert S.generate(SMALL, "pool", tmp_path, SEGMENT, progress=seen.append) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps and sum(seen) == len(paths)
    sidecar = paths[0].with_suffix(".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "gravity": 99}))
    paths[1].unlink()
    S.generate(SMALL, "pool", tmp_path, SEGMENT)
    assert json.loads(sidecar.read_text())["gravity"] != 99
    assert paths[0].stat().st_mtime_ns != stamps[0] and paths[1].is_file()
    assert paths[2].stat().st_mtime_ns == stamps[2]
    # another frame size changes every video, though the physics labels are the same
    S.generate(SMALL.model_copy(update={"size": 64}), "pool", tmp_path, SEGMENT)
    assert decord.VideoReader(str(paths[2]))[0].shape == (64, 64, 3)


@pytest.mark.parametrize("gop", [1, 5, 8])
def test_keyframes_every_gop_frames(tmp_path, gop):
    frames, _ = S.render_video(3, SyntheticConfig(seconds=2.0, fps=12, size=32))
    path = tmp_path / "v.mp4"
    write_video(frames, path, fps=12, gop=gop, crf=18)
    decoded, _, keyframes = _decode_pyav(path)
    assert len(keyframes) == len(decoded) == len(frames)
    assert [i for i, k in enumerate(keyframes) if k] == list(range(0, len(frames), gop))


def test_write_video_is_bit_exact_and_atomic(tmp_path):
    frames, _ = S.render_video(11, SMALL)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_video(frames, a, fps=SMALL.fps, gop=SMALL.gop, crf=0)
    write_video(frames, b, fps=SMALL.fps, gop=SMALL.gop, crf=0)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


def test_write_video_rejects_odd_frame_size(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(np.zeros((4, 33, 33, 3), np.uint8), tmp_path / "odd.mp4", fps=12, gop=4, crf=0)
    assert not list(tmp_path.iterdir())
