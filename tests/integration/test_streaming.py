"""Shards streamed from a real S3 server on loopback into a bounded cache (videossl.data.remote):
every clip reads as it does from the local dataset, a connection cut mid-download is retried, the
cache never holds more than its bound, and training on the streamed dataset resumes bit-exactly."""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.integration.test_resume import STEPS, newest, one_process, params, run, truncate  # noqa: F401  (fixtures)
from tests.servers import HOST, free_port
from videossl import storage
from videossl.data.remote import stage_index
from videossl.data.shards import SHARDS, ClipStore


class CuttingProxy:
    """A TCP proxy in front of the S3 server that cuts one response after `cut_after` bytes (a dropped
    connection mid-download), then passes everything through."""

    def __init__(self, upstream: str, cut_after: int) -> None:
        self.upstream = upstream.removeprefix("http://").split(":")
        self.cut_after, self.cuts = cut_after, 0
        self.server = socket.create_server((HOST, free_port()))
        self.url = f"http://{HOST}:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.upstream[0], int(self.upstream[1])))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if downstream and self.cuts == 0 and sent + len(data) > self.cut_after:
                    self.cuts += 1  # this response dies half-way, as on a flaky network
                    dst.sendall(data[: self.cut_after - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def published(s3_server, tiny_data) -> str:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_server.env.items():
            mp.setenv(k, v)
        return storage.upload_dir(tiny_data, f"s3://{s3_server.make_bucket('streaming')}/data", s3_server.endpoint_url)


def _shard_sizes(data: Path) -> list[int]:
    return sorted(p.stat().st_size for p in (data / SHARDS).glob("*.npy"))


def test_streamed_clips_read_as_local_ones_through_a_cut_connection_in_a_bounded_cache(
        published, s3_server, tiny_data, tmp_path):
    sizes = _shard_sizes(tiny_data)
    assert len(sizes) >= 2, "the tiny dataset needs several shards for a cache smaller than it"
    bound = sizes[-1] + sizes[-2]  # room for the two largest shards, not for all of them
    proxy = CuttingProxy(s3_server.endpoint_url, cut_after=sizes[0] // 2)
    try:
        index = stage_index(published, tmp_path / "index", tmp_path / "cache", bound, proxy.url)
        assert not (index / SHARDS).exists()  # nothing but the small files before the first read
        streamed, local = ClipStore(index), ClipStore(tiny_data)
        assert [v.source_id for v in streamed.videos] == [v.source_id for v in local.videos]
        held = []
        for video in local.videos:  # every video, shard after shard: more shards than the cache holds
            start = video.clip_starts[-1]
            assert np.array_equal(streamed.window(streamed.by_id[video.source_id], start, 4, 2),
                                  local.window(video, start, 4, 2)), video.source_id
            held.append(sum(p.stat().st_size for p in (tmp_path / "cache").glob("*.npy")))
    finally:
        proxy.close()
    assert proxy.cuts == 1  # the connection was cut once, and the read went on
    assert max(held) <= bound
    assert streamed.fetches >= len(sizes)  # each shard came in once at least (evicted ones again)


def test_training_on_streamed_shards_resumes_bit_exactly(published, s3_server, tiny_data, tmp_path, params,
                                                         monkeypatch):
    """The same weights from the local dataset, from streamed shards, and from streamed shards resumed
    after a damaged newest checkpoint: what is sampled does not depend on where the shards come from
    (here two shards at a time, pretrain.shard_window, as a cache of two shards wants)."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    cfg = params(tmp_path, "pretrain.shard_window=2")
    local, local_weights = run(cfg, tiny_data, tmp_path / "local", tmp_path / "ckpt-local")
    bound = sum(_shard_sizes(tiny_data)[-2:])
    index = stage_index(published, tmp_path / "index", tmp_path / "cache", bound, s3_server.endpoint_url)
    ckpts = tmp_path / "ckpt-streamed"
    first, _ = run(cfg, index, tmp_path / "a", ckpts)
    assert first["weights_sha256"] == local["weights_sha256"]
    truncate(newest(ckpts))
    resumed, weights = run(cfg, index, tmp_path / "b", ckpts)
    assert resumed["resumed_from"] == STEPS - 2 and resumed["weights_sha256"] == local["weights_sha256"]
    assert all(torch.equal(weights[k], v) for k, v in local_weights.items())
    assert json.loads((index / "ingest.json").read_text()) == json.loads((tiny_data / "ingest.json").read_text())


def test_a_shard_window_fetches_each_shard_once_an_epoch_into_a_small_cache(published, s3_server, tiny_data, tmp_path):
    """Uniform sampling over a cache of two shards fetches evicted shards again; pretrain.shard_window 2
    (the sampler draws two shards at a time) fetches each shard once per epoch."""
    from videossl.train.data import GlobalBatchSampler

    bound = sum(_shard_sizes(tiny_data)[-2:])
    fetches = {}
    for window in (0, 2):
        index = stage_index(published, tmp_path / f"index-{window}", tmp_path / f"cache-{window}", bound,
                            s3_server.endpoint_url)
        store = ClipStore(index)
        keys = [(v, v.clip_starts[0]) for v in store.videos]  # one clip a video: every shard, few reads
        names = sorted({v.shard for v in store.videos})
        groups = [names.index(v.shard) for v, _ in keys]
        batch = 8
        sampler = GlobalBatchSampler(len(keys), batch, 0, 1, 0, 0, len(keys) // batch, groups, window)
        for items in sampler:  # one epoch
            for item in items:
                video, start = keys[item.index]
                store.window(video, start, store.clip_frames)
        fetches[window] = store.fetches
    assert fetches[2] == len(_shard_sizes(tiny_data))  # each shard once
    assert fetches[0] > fetches[2]  # uniform draws keep re-fetching what the small cache evicted
