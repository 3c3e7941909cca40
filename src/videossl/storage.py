"""Local paths and s3:// URIs behind one small interface (boto3 with retries, atomic local writes).

S3 is reached through boto3 only. The endpoint URL comes from the caller (params) or from the
standard environment (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `MLFLOW_S3_ENDPOINT_URL`), so the
same code talks to AWS, MinIO or a test server on loopback.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

S3_RETRIES = 5  # boto3 "standard" mode: exponential backoff on throttling and 5xx/connection errors


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ("bucket", "a/b")."""
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket")
    return bucket, key


def s3_client(endpoint_url: str | None = None):
    import boto3
    from botocore.config import Config as BotoConfig

    endpoint_url = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                    or os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    return boto3.client(
        "s3", endpoint_url=endpoint_url,
        config=BotoConfig(retries={"max_attempts": S3_RETRIES, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


@dataclass(frozen=True)
class S3Object:
    uri: str
    size: int


def list_s3(uri: str, endpoint_url: str | None = None) -> list[S3Object]:
    """Every object under a prefix, sorted by key."""
    bucket, prefix = split_s3(uri)
    client = s3_client(endpoint_url)
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out.append(S3Object(f"s3://{bucket}/{obj['Key']}", int(obj["Size"])))
    return sorted(out, key=lambda o: o.uri)


def download(uri: str, dest: Path, endpoint_url: str | None = None) -> Path:
    """Download an s3 object to `dest` atomically (a partial download never appears under `dest`)."""
    bucket, key = split_s3(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    s3_client(endpoint_url).download_file(bucket, key, str(tmp))
    os.replace(tmp, dest)
    return dest


def upload(path: Path, uri: str, endpoint_url: str | None = None) -> str:
    bucket, key = split_s3(uri)
    # upload_file completes a multipart upload only when every part arrived: no half object is visible.
    s3_client(endpoint_url).upload_file(str(path), bucket, key)
    return uri


def remove(uri: str | os.PathLike, endpoint_url: str | None = None) -> None:
    """Delete a local file or an s3 object; one that is already gone is fine."""
    if is_s3(uri):
        bucket, key = split_s3(str(uri))
        s3_client(endpoint_url).delete_object(Bucket=bucket, Key=key)
    else:
        Path(uri).unlink(missing_ok=True)


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it onto `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)
