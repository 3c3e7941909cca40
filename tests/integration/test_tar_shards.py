"""`ingest.shard_format: tar`: the same dataset as WebDataset-style tar shards (per video `<key>.npy`
frames and `<key>.json`), read by videossl exactly as the .npy shards are, and by plain tar tools and a
WebDataset-style reader (samples grouped by key) as they are."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile

import numpy as np

from tests.tiny import tiny_config
from videossl.data.shards import ClipStore
from videossl.steps.ingest import ingest


def test_tar_shards_hold_the_same_clips_and_open_with_ecosystem_tools(tiny_data, tmp_path):
    data = tmp_path / "tar"
    ingest(tiny_config(tmp_path, "ingest.shard_format=tar"), data)
    npy, tar = ClipStore(tiny_data), ClipStore(data)
    assert [v.source_id for v in tar.videos] == [v.source_id for v in npy.videos]
    assert {v.shard.rsplit(".", 1)[1] for v in tar.videos} == {"tar"}
    for a, b in zip(npy.videos, tar.videos):  # every frame of every video, at two playback speeds
        assert (a.frames, a.split, a.labels, a.clip_starts) == (b.frames, b.split, b.labels, b.clip_starts)
        np.testing.assert_array_equal(npy.window(a, 0, a.frames), tar.window(b, 0, b.frames))
        np.testing.assert_array_equal(npy.window(a, 1, (a.frames - 1) // 2, 2), tar.window(b, 1, (b.frames - 1) // 2, 2))
    # the manifest differs only in the shard files' names (so the digest names the format too)
    rows = lambda d: [json.loads(line) for line in (d / "manifest.jsonl").read_text().splitlines()]  # noqa: E731
    assert [{**r, "shard": r["shard"][:-4]} for r in rows(tiny_data)] == [{**r, "shard": r["shard"][:-4]} for r in rows(data)]

    shard = sorted((data / "shards").glob("*.tar"))[0]
    listing = subprocess.run(["tar", "-tf", str(shard)], capture_output=True, text=True, check=True).stdout.split()
    assert listing[:4] == ["000000.npy", "000000.json", "000001.npy", "000001.json"]
    # a WebDataset-style pass: stream the tar, group members by key, decode each sample
    samples: dict[str, dict] = {}
    with tarfile.open(shard, "r|") as stream:
        for member in stream:
            key, ext = member.name.split(".", 1)
            body = stream.extractfile(member).read()
            samples.setdefault(key, {})[ext] = np.load(io.BytesIO(body)) if ext == "npy" else json.loads(body)
    for sample in samples.values():
        video = tar.by_id[sample["json"]["source_id"]]
        assert sample["json"]["split"] == video.split and sample["json"]["labels"] == video.labels
        np.testing.assert_array_equal(sample["npy"], tar.window(video, 0, video.frames))
