"""`ingest.shard_format: h264`: each video kept compressed (`<key>.mp4`, H.264 at the dataset's size and
fps) in WebDataset-style tar shards, decoded where a window is read: in the loader's worker processes for
training, from a local folder or streamed from S3. The manifest describes the frames readers decode."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile

import av
import numpy as np
import pytest

from tests.tiny import tiny_config
from videossl import objectives, storage
from videossl.config import ConfigError
from videossl.data import shards
from videossl.data.remote import stage_index
from videossl.data.shards import SHARDS, ClipStore
from videossl.models.checkpoint import encoder_shape
from videossl.models.vit import VideoViT
from videossl.steps.ingest import ingest, ingest_partition, merge
from videossl.train.data import ClipDataset, Collator, GlobalBatchSampler, make_loader

# what crf 18 may change in a pixel on average (0-255) on the tiny world: near-lossless, not lossless
MEAN_ERROR = 6.0
H264 = ("ingest.shard_format=h264", "ingest.chunk_videos=40")  # chunks: so that two partitions split it


@pytest.fixture(scope="module")
def h264_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("h264")
    data = root / "data"
    ingest(tiny_config(root, *H264), data)
    return data


def _rows(data):
    return [json.loads(line) for line in (data / shards.MANIFEST).read_text().splitlines()]


def test_h264_shards_hold_the_same_videos_compressed_and_the_manifest_describes_what_is_decoded(tiny_data, h264_data):
    npy, h264 = ClipStore(tiny_data), ClipStore(h264_data)
    assert {v.shard.split(".", 1)[1] for v in h264.videos} == {"h264.tar"}
    assert [v.source_id for v in h264.videos] == [v.source_id for v in npy.videos]
    errors = []
    for a, b in zip(npy.videos, h264.videos):
        assert (a.frames, a.split, a.labels, a.clip_starts) == (b.frames, b.split, b.labels, b.clip_starts)
        whole = h264.window(b, 0, b.frames)
        errors.append(np.abs(whole.astype(np.int16) - npy.window(a, 0, a.frames)).mean())
        # a window anywhere, at another playback speed, is those frames of the whole decode (seeking is exact)
        np.testing.assert_array_equal(h264.window(b, 3, (b.frames - 4) // 2, 2), whole[3:3 + (b.frames - 4) // 2 * 2:2])
    assert 0 < np.mean(errors) < MEAN_ERROR, np.mean(errors)
    # every clip's digest is the digest of the frames a reader decodes, not of the frames before encoding
    for row in _rows(h264_data):
        video = h264.by_id[row["source_id"]]
        assert shards.clip_digest(h264.window(video, row["start"], row["shape"][0])) == row["digest"]
    size = lambda d: sum(p.stat().st_size for p in (d / SHARDS).iterdir())  # noqa: E731
    assert size(h264_data) * 4 < size(tiny_data), (size(h264_data), size(tiny_data))


def test_h264_samples_open_with_tar_and_any_decoder_and_pyav_reads_what_decord_reads(h264_data):
    store = ClipStore(h264_data)
    shard = sorted((h264_data / SHARDS).iterdir())[0]
    listing = subprocess.run(["tar", "-tf", str(shard)], capture_output=True, text=True, check=True).stdout.split()
    assert listing[:4] == ["000000.mp4", "000000.json", "000001.mp4", "000001.json"]
    with tarfile.open(shard) as tar:
        meta = json.loads(tar.extractfile("000001.json").read())
        mp4 = tar.extractfile("000001.mp4").read()
    video = store.by_id[meta["source_id"]]
    with av.open(io.BytesIO(mp4)) as container:  # the sample is a plain mp4 to any tool
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, meta["frames"]) == ("h264", store.size, video.frames)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    np.testing.assert_array_equal(frames, store.window(video, 0, video.frames))
    # the PyAV path (where decord is not installed) decodes the same frames at any indices
    np.testing.assert_array_equal(shards.decode_h264(mp4, [5, 1, 2]), frames[[5, 1, 2]])


def test_h264_partitions_merge_into_the_same_dataset(h264_data, tmp_path):
    cfg = tiny_config(tmp_path, *H264)
    for i in range(2):
        ingest_partition(cfg, tmp_path / "parts", i, 2)
    merged = merge(cfg, tmp_path / "parts", tmp_path / "merged")
    assert merged["digest"] == json.loads((h264_data / shards.STATS).read_text())["digest"]
    assert sorted(p.name for p in (tmp_path / "merged" / SHARDS).iterdir()) == sorted(p.name for p in (h264_data / SHARDS).iterdir())


def test_training_batches_decoded_in_loader_workers_equal_the_main_process_ones(h264_data, tmp_path):
    cfg = tiny_config(tmp_path)
    store = ClipStore(h264_data)
    _, recipe = objectives.build(cfg, VideoViT(encoder_shape(cfg.model, "video", store.clip_frames, store.size)))

    def batches(workers):
        dataset = ClipDataset(store, "video", recipe, cfg.seed)
        sampler = GlobalBatchSampler(len(dataset), cfg.pretrain.batch_size, 0, 1, cfg.seed, 0, 3, dataset.shards(), 2)
        return list(make_loader(dataset, sampler, Collator(recipe, cfg.seed), workers, pin_memory=False))

    for here, there in zip(batches(0), batches(2), strict=True):
        assert here.keys() == there.keys()
        for key in here:
            np.testing.assert_array_equal(np.asarray(here[key]), np.asarray(there[key]))


def test_h264_shards_stream_from_s3_and_read_as_local_ones(h264_data, s3_server, tmp_path, monkeypatch):
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    uri = storage.upload_dir(h264_data, f"s3://{s3_server.make_bucket('h264')}/data", s3_server.endpoint_url)
    largest = max(p.stat().st_size for p in (h264_data / SHARDS).iterdir())
    streamed = ClipStore(stage_index(uri, tmp_path / "index", tmp_path / "cache", 2 * largest, s3_server.endpoint_url))
    local = ClipStore(h264_data)
    for video in local.videos[::7]:
        np.testing.assert_array_equal(streamed.window(streamed.by_id[video.source_id], 0, video.frames),
                                      local.window(video, 0, video.frames))
    assert sum(p.stat().st_size for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tar")) <= 2 * largest


def test_h264_needs_an_even_size_and_says_so_before_work(tmp_path):
    with pytest.raises(ConfigError, match="ingest.size .33. must be even for ingest.shard_format h264"):
        tiny_config(tmp_path, "ingest.shard_format=h264", "ingest.size=33")
