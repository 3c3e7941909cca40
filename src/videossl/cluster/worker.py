"""What each trainer process of a cluster job runs under torchrun:
`torchrun -m videossl.cluster.worker --data s3://... --out s3://...`.

A pod starts with neither a params file nor the dataset on its disk: the params text comes in the
VIDEOSSL_PARAMS variable and the clip shards are under an s3:// prefix. This writes the one and, for
the other, fetches the dataset's small files and streams its shards into a bounded cache as training
reads them (cluster.job.stream_shards; videossl.data.remote), or downloads it whole first (once per
pod: the first local process fetches while the others wait on a file lock), then runs the trainer entry
point, videossl.train.main, on the local folder.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from videossl import storage
from videossl.cluster.jobs import PARAMS_ENV
from videossl.storage import write_text_atomic
from videossl.train import main as trainer


def stage_root() -> Path:
    """Scratch space of this pod ($TMPDIR, an emptyDir on a read-only root filesystem)."""
    return Path(tempfile.gettempdir()) / "videossl-stage"


def stage_params(text: str, root: Path) -> Path:
    path = root / f"params-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    if not path.is_file():  # every local process may write it: the rename is atomic
        write_text_atomic(path, text)
    return path


def stage_data(uri: str, root: Path) -> Path:
    """A local, md5-checked copy of the dataset published at `uri` (by a pipeline step's upload, or a
    DVC data version resolved by `versioning.resolve_data`, whose shards live in the DVC remote):
    only a folder with its completion manifest is read. One copy per pod, reused while the manifest
    is unchanged; the lock makes the pod's other ranks wait for it."""
    manifest = storage.read_complete(uri)  # raises StorageError if the folder is not complete
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]
    dest = root / f"data-{digest}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel even if the holder dies
        if not dest.is_dir():
            part = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=root))
            try:
                storage.download_dir(uri, part)
                os.replace(part, dest)  # a half-downloaded copy never appears under dest
            finally:
                shutil.rmtree(part, ignore_errors=True)
    return dest


def stream_data(uri: str, root: Path, cache_gib: float) -> Path:
    """The dataset at `uri` with its shards streamed (videossl.data.remote): the small files now, each
    shard on first use into this pod's cache of at most `cache_gib`. One index per pod, written by the
    first local process while the others wait; the cache is shared by the pod's processes."""
    from videossl.data.remote import stage_index

    manifest = storage.read_complete(uri)  # raises StorageError if the folder is not complete
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]
    dest = root / f"index-{digest}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.is_dir():
            part = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=root))
            try:
                stage_index(uri, part, root / f"shards-{digest}", int(cache_gib * 2**30))
                os.replace(part, dest)
            finally:
                shutil.rmtree(part, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="videossl.cluster.worker", description=__doc__)
    ap.add_argument("--data", required=True, help="ingested dataset: s3://bucket/prefix (or a path in the pod)")
    ap.add_argument("--out", required=True, help="where encoder.pt and frame_encoder.pt go (s3://)")
    args = ap.parse_args(argv)
    params = os.environ.get(PARAMS_ENV)
    if not params:
        print(f"error: {PARAMS_ENV} is not set: the job manifest passes the params text in it", file=sys.stderr)
        return 2
    root = stage_root()
    config = stage_params(params, root)
    from videossl.config import parse_config

    job = parse_config(params).cluster.job
    try:
        if not storage.is_s3(args.data):
            data = Path(args.data)
        elif job.stream_shards:  # training starts once the manifest is here; shards follow as read
            data = stream_data(args.data, root, job.shard_cache_gib)
        else:
            data = stage_data(args.data, root)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return trainer.main(["--config", str(config), "--data", str(data), "--out", args.out])


if __name__ == "__main__":
    sys.exit(main())
