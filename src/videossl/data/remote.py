"""Shards streamed from a published dataset into a bounded local cache.

A trainer pod need not copy the whole dataset before its first step. `stage_index` fetches the small
files of a dataset published at an s3:// prefix (the manifest, the record) and writes REMOTE beside
them: where the shards are, each one's md5 and size from the folder's completion manifest, and the
cache's bound. `ClipStore` sees REMOTE and reads every shard through a `ShardCache`: fetched on first
use (storage.download: retried per request and per object, so a dropped connection costs a retry,
never the epoch), checked against its md5, kept while the cache has room, and evicted least recently
used when it has not. A shard being read is never evicted from under its reader: an evicted file
stays readable through its open memory maps until they close (POSIX unlink).

What is sampled does not change, so resume stays exact; a cache smaller than the dataset pays for
random access with downloads again (counted in `fetches`).
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from videossl import storage
from videossl.data.shards import SHARDS

REMOTE = "remote.json"  # beside a manifest: its shards are fetched from `uri` into a bounded cache


@dataclass
class ShardCache:
    uri: str                      # the dataset's s3:// prefix
    files: dict[str, dict]        # shard name -> {"md5", "size", optional "uri"} (the completion manifest's entries)
    cache_dir: Path
    max_bytes: int
    endpoint_url: str | None = None
    fetches: int = 0              # downloads this process made (a re-fetch after eviction counts again)
    _resident: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, data_dir: Path) -> "ShardCache":
        rec = json.loads((data_dir / REMOTE).read_text())
        return cls(rec["uri"], rec["files"], Path(rec["cache_dir"]), int(rec["max_bytes"]), rec.get("endpoint_url"))

    def path(self, name: str) -> Path:
        """A local path of shard `name`, fetched (and checked) when it is not in the cache."""
        if name not in self.files:
            raise storage.StorageError(f"shard {name} is not in {storage.join(self.uri, storage.COMPLETE)}")
        local = self.cache_dir / name
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one download of a shard per pod, whichever process asks first
            if not local.is_file():
                entry = self.files[name]
                self._make_room(int(entry["size"]), keep=name)
                src = entry.get("uri") or storage.join(self.uri, f"{SHARDS}/{name}")
                storage.download(src, local, self.endpoint_url)
                got = storage.file_md5(local)
                if got != entry["md5"]:
                    local.unlink()
                    raise storage.StorageError(f"{src}: md5 {got} does not match {entry['md5']} in its dataset's "
                                               f"{storage.COMPLETE} (damaged, or overwritten after publishing)")
                self.fetches += 1
        os.utime(local)  # most recently used
        self._resident.add(name)
        return local

    def resident(self) -> set[str]:
        """The shards now in the cache (any process's)."""
        return {p.name for p in self.cache_dir.glob("*") if p.name in self.files} if self.cache_dir.is_dir() else set()

    def _make_room(self, need: int, keep: str) -> None:
        present = sorted((p for p in self.cache_dir.glob("*") if p.name in self.files and p.name != keep),
                         key=lambda p: p.stat().st_mtime)
        used = sum(p.stat().st_size for p in present)
        if need > self.max_bytes:
            raise storage.StorageError(f"shard {keep} ({need / 2**30:.2f} GiB) does not fit the shard cache "
                                       f"({self.max_bytes / 2**30:.2f} GiB): raise cluster.job.shard_cache_gib")
        for p in present:  # least recently used first
            if used + need <= self.max_bytes:
                break
            used -= p.stat().st_size
            p.unlink(missing_ok=True)
            self._resident.discard(p.name)


def stage_index(uri: str, dest: Path, cache_dir: Path, max_bytes: int, endpoint_url: str | None = None) -> Path:
    """The dataset published at `uri` as a local folder whose shards stream (REMOTE): its top-level
    files (the manifest, the record) are fetched and checked now, the shards on first use, nothing
    else (a dataset's `sources/` working folder is not read by training). Refuses an incomplete folder."""
    files = storage.read_complete(uri, endpoint_url)
    dest.mkdir(parents=True, exist_ok=True)
    shards = {}
    for rel, entry in sorted(files.items()):
        if rel.startswith(f"{SHARDS}/"):
            shards[rel[len(SHARDS) + 1:]] = entry
            continue
        if "/" in rel:
            continue
        target = dest / rel
        storage.download(entry.get("uri") or storage.join(uri, rel), target, endpoint_url)
        if storage.file_md5(target) != entry["md5"]:
            target.unlink()
            raise storage.StorageError(f"{storage.join(uri, rel)} does not match its md5 in {storage.COMPLETE}")
    storage.write_text_atomic(dest / REMOTE, json.dumps({"uri": uri, "files": shards, "cache_dir": str(cache_dir),
                                                         "max_bytes": max_bytes, "endpoint_url": endpoint_url},
                                                        indent=1) + "\n")
    return dest
