"""Local paths and s3:// URIs behind one small interface (boto3 with retries, atomic writes).

S3 is reached through boto3 only. The endpoint URL comes from the caller (params) or from the
standard environment (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `MLFLOW_S3_ENDPOINT_URL`), so the
same code talks to AWS, MinIO or a test server on loopback.

Failures are handled at two levels:
- one request: botocore's "standard" retry mode retries throttling, 5xx and connection errors
  (refused, reset, timeouts) with exponential backoff and jitter, `S3_MAX_ATTEMPTS` tries (the
  standard `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE` variables override it);
- one object: when a request has used up its tries, or the server lost a multipart upload in a
  restart (`NoSuchUpload`), `upload`/`download` start the whole object again, `OBJECT_ATTEMPTS`
  times, then raise `StorageError` naming the object and the endpoint.

What a reader sees is always complete: an object appears only when its upload completed (a single
PUT, or a multipart upload on its final CompleteMultipartUpload); a folder (`upload_dir`) counts
only once its `_COMPLETE` manifest exists, which is written last and lists every file's md5, and
`download_dir` checks every file against it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Sequence, TypeVar

from videossl.errors import StepError

log = logging.getLogger(__name__)

# Per request. With full jitter the waits are random(0, 1, 2, 4, 8, 16, 20, 20 s): ~35 s on average,
# at most ~70 s, long enough to ride out an S3/MinIO pod restart.
S3_MAX_ATTEMPTS = 8
OBJECT_ATTEMPTS = 3           # per object, on top of the per-request retries
OBJECT_BACKOFF_S = 1.0        # waits 1 s, 2 s between whole-object attempts
COMPLETE = "_COMPLETE"        # the manifest that makes an uploaded folder readable

T = TypeVar("T")


class StorageError(StepError):
    """An object could not be read or written (after the retries), or is incomplete/damaged."""


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ("bucket", "a/b")."""
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket")
    return bucket, key


def join(uri: str, rel: str) -> str:
    return f"{uri.rstrip('/')}/{rel}"


def endpoint(endpoint_url: str | None = None) -> str | None:
    return (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("MLFLOW_S3_ENDPOINT_URL"))


def s3_client(endpoint_url: str | None = None):
    import boto3
    from botocore.config import Config as BotoConfig

    retries = {"mode": os.environ.get("AWS_RETRY_MODE") or "standard",
               # total tries, like $AWS_MAX_ATTEMPTS (botocore's "max_attempts" counts retries only)
               "total_max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS") or S3_MAX_ATTEMPTS)}
    return boto3.client(
        "s3", endpoint_url=endpoint(endpoint_url),
        # tcp_keepalive: a long transfer through a load balancer or NAT is not dropped as idle
        config=BotoConfig(retries=retries, connect_timeout=5, read_timeout=60, tcp_keepalive=True),
    )


# ----------------------------------------------------------------------------------------------
# whole-object retries


_TRANSIENT_CODES = {"NoSuchUpload", "RequestTimeout", "InternalError", "SlowDown", "ServiceUnavailable",
                    "Throttling", "ThrottlingException", "500", "502", "503", "504"}


def _transient(err: BaseException) -> bool:
    """A failure that another attempt at the whole object may not meet: connection trouble that
    outlasted botocore's retries, a 5xx/throttle, a multipart upload the server forgot (restart)."""
    from botocore.exceptions import (ConnectionError as BotoConnectionError, HTTPClientError, IncompleteReadError,
                                     ResponseStreamingError)
    from s3transfer.exceptions import RetriesExceededError

    seen = set()
    while err is not None and id(err) not in seen:  # boto3 wraps ClientError in S3UploadFailedError
        seen.add(id(err))
        if isinstance(err, (BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError,
                            RetriesExceededError, ConnectionError, TimeoutError)):
            return True
        if _s3_code(err) in _TRANSIENT_CODES:
            return True
        err = err.__cause__ or err.__context__
    return False


def _with_object_retries(what: str, endpoint_url: str | None, attempt: Callable[[], T]) -> T:
    for n in range(1, OBJECT_ATTEMPTS + 1):
        try:
            return attempt()
        except Exception as e:
            if not _transient(e):
                raise
            if n == OBJECT_ATTEMPTS:
                raise StorageError(f"{what} failed after {OBJECT_ATTEMPTS} attempts (each retried up to "
                                   f"{os.environ.get('AWS_MAX_ATTEMPTS') or S3_MAX_ATTEMPTS} times) against "
                                   f"{endpoint(endpoint_url) or 'AWS S3'}: {type(e).__name__}: {e}") from e
            wait = OBJECT_BACKOFF_S * 2 ** (n - 1)
            log.warning("%s: attempt %d/%d failed (%s: %s); starting the object again in %.0f s", what, n,
                        OBJECT_ATTEMPTS, type(e).__name__, e, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------
# objects


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

    def attempt() -> None:
        s3_client(endpoint_url).download_file(bucket, key, str(tmp))

    try:
        _with_object_retries(f"download of {uri}", endpoint_url, attempt)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def upload(path: Path, uri: str, endpoint_url: str | None = None) -> str:
    """Upload a file. upload_file completes a multipart upload only when every part arrived (and a
    single PUT is all or nothing): no half object is ever visible. A failed attempt starts again."""
    bucket, key = split_s3(uri)
    _with_object_retries(f"upload of {path} to {uri}", endpoint_url,
                         lambda: s3_client(endpoint_url).upload_file(str(path), bucket, key))
    return uri


def write_bytes(uri: str, data: bytes, endpoint_url: str | None = None) -> str:
    bucket, key = split_s3(uri)
    _with_object_retries(f"upload of {uri}", endpoint_url,
                         lambda: s3_client(endpoint_url).put_object(Bucket=bucket, Key=key, Body=data))
    return uri


def read_bytes(uri: str, endpoint_url: str | None = None) -> bytes:
    bucket, key = split_s3(uri)

    def attempt() -> bytes:
        resp = s3_client(endpoint_url).get_object(Bucket=bucket, Key=key)
        body = resp["Body"].read()
        if len(body) != resp["ContentLength"]:  # a connection cut mid-body
            raise ConnectionError(f"got {len(body)} of {resp['ContentLength']} bytes")
        return body

    return _with_object_retries(f"read of {uri}", endpoint_url, attempt)


def remove(uri: str | os.PathLike, endpoint_url: str | None = None) -> None:
    """Delete a local file or an s3 object; one that is already gone is fine."""
    if is_s3(uri):
        bucket, key = split_s3(str(uri))
        s3_client(endpoint_url).delete_object(Bucket=bucket, Key=key)
    else:
        Path(uri).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# folders: all or nothing through the _COMPLETE manifest


def file_md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)  # integrity, not security; DVC names its objects by md5 too
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_complete(uri: str, files: dict[str, dict], endpoint_url: str | None = None) -> str:
    """Write the `_COMPLETE` manifest of the folder at `uri`: {relpath: {"md5", "size", ["uri"]}}.
    An entry with "uri" lives elsewhere (e.g. a content-addressed DVC object), the rest under `uri`."""
    text = json.dumps({"files": files}, indent=1, sort_keys=True) + "\n"
    return write_bytes(join(uri, COMPLETE), text.encode(), endpoint_url)


def _s3_code(err: BaseException) -> str | None:
    from botocore.exceptions import ClientError

    return str(err.response.get("Error", {}).get("Code")) if isinstance(err, ClientError) else None


def read_complete(uri: str, endpoint_url: str | None = None) -> dict[str, dict]:
    try:
        files = json.loads(read_bytes(join(uri, COMPLETE), endpoint_url))["files"]
    except Exception as e:
        if _s3_code(e) in ("404", "NoSuchKey"):
            raise StorageError(f"{uri} is not a complete folder: no {COMPLETE} manifest (its writer has not "
                               f"finished, or failed); refusing to read it") from None
        raise
    for rel in files:
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or ".." in parts:
            raise StorageError(f"{join(uri, COMPLETE)}: bad path {rel!r}")
    return files


def object_md5(uri: str, endpoint_url: str | None = None) -> tuple[str, int]:
    """(md5, size) of an s3 object, streamed: nothing lands on disk."""
    bucket, key = split_s3(uri)

    def attempt() -> tuple[str, int]:
        resp = s3_client(endpoint_url).get_object(Bucket=bucket, Key=key)
        h, size = hashlib.md5(usedforsecurity=False), 0
        for chunk in resp["Body"].iter_chunks(1 << 20):
            h.update(chunk)
            size += len(chunk)
        if size != resp["ContentLength"]:
            raise ConnectionError(f"got {size} of {resp['ContentLength']} bytes")
        return h.hexdigest(), size

    return _with_object_retries(f"read of {uri}", endpoint_url, attempt)


def seal_dir(uri: str, rels: Sequence[str], endpoint_url: str | None = None) -> str:
    """Write the `_COMPLETE` manifest of files that a writer outside this protocol put under `uri`
    one by one, each atomically (a cluster job's checkpoints): from now on the folder reads whole."""
    files = {}
    for rel in sorted(rels):
        md5, size = object_md5(join(uri, rel), endpoint_url)
        files[rel] = {"md5": md5, "size": size}
    return write_complete(uri, files, endpoint_url)


def object_stat(uri: str, endpoint_url: str | None = None) -> tuple[int, str | None] | None:
    """(size, md5 when the store gives one) of an s3 object, or None when it does not exist. The
    ETag of a single-PUT object is its md5; a multipart one's is not (it has a '-')."""
    bucket, key = split_s3(uri)

    def attempt():
        try:
            head = s3_client(endpoint_url).head_object(Bucket=bucket, Key=key)
        except Exception as e:
            if _s3_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        etag = head.get("ETag", "").strip('"')
        return int(head["ContentLength"]), (etag if etag and "-" not in etag else None)

    return _with_object_retries(f"check of {uri}", endpoint_url, attempt)


def verify_objects(uri: str, files: dict[str, dict], endpoint_url: str | None = None) -> None:
    """Every object a manifest is about to list is in the store, with its size (and md5 where the
    store reports one): a manifest never vouches for an object that a lost or replaced upload left
    missing or different. Raises StorageError naming the first that is not."""
    for rel, entry in sorted(files.items()):
        src = entry.get("uri") or join(uri, rel)
        stat = object_stat(src, endpoint_url)
        if stat is None:
            hint = " (a DVC object: was that data version pushed? `videossl pipeline push-data`)" if "uri" in entry else ""
            raise StorageError(f"{src}, file {rel} of {uri}, is not in the store{hint}: {COMPLETE} not written")
        size, md5 = stat
        if (entry.get("size") is not None and size != entry["size"]) or (md5 is not None and md5 != entry["md5"]):
            raise StorageError(f"{src}, file {rel} of {uri}, is not what was uploaded (size {size} vs {entry['size']}"
                               f"{'' if md5 is None else f', md5 {md5} vs ' + entry['md5']}): {COMPLETE} not written")


def upload_dir(local: Path, uri: str, endpoint_url: str | None = None, referenced: dict[str, dict] | None = None) -> str:
    """Publish a local folder at an s3 prefix: the old manifest is deleted first (so nobody pairs it
    with a half-replaced folder), then every file is uploaded, then the new manifest, last.
    `referenced`: more files of the folder, already published elsewhere ({rel: {"md5", "size", "uri"}}):
    listed, checked present, not copied."""
    local = Path(local)
    remove(join(uri, COMPLETE), endpoint_url)
    files = dict(referenced or {})
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        files[rel] = {"md5": file_md5(path), "size": path.stat().st_size}
        upload(path, join(uri, rel), endpoint_url)
    verify_objects(uri, files, endpoint_url)
    write_complete(uri, files, endpoint_url)
    return uri


def download_dir(uri: str, dest: Path, endpoint_url: str | None = None, skip: str | None = None) -> Path:
    """Materialise a folder published by `upload_dir` (or `versioning.resolve_data`) under `dest`,
    every file checked against its manifest md5 (but those under the folder `skip`). Raises StorageError
    when the folder is incomplete or a file does not match (and leaves no unchecked file under `dest`)."""
    dest = Path(dest)
    for rel, entry in sorted(read_complete(uri, endpoint_url).items()):
        if skip is not None and rel.startswith(f"{skip}/"):
            continue
        src, target = entry.get("uri") or join(uri, rel), dest / rel
        if target.is_file() and file_md5(target) == entry["md5"]:
            continue  # already here (a retried task): nothing to fetch
        try:
            download(src, target, endpoint_url)
        except Exception as e:
            if _s3_code(e) not in ("404", "NoSuchKey"):
                raise
            pushed = " (a DVC object: was that data version pushed? `videossl pipeline push-data`)"
            hint = pushed if "uri" in entry else ""
            raise StorageError(f"{src}, file {rel} of {uri}, does not exist{hint}") from None
        got = file_md5(target)
        if got != entry["md5"]:
            target.unlink()
            raise StorageError(f"{src}: md5 {got} does not match {entry['md5']} in {join(uri, COMPLETE)} "
                               f"(damaged, or overwritten after the manifest was written)")
    return dest


@contextmanager
def staged(inputs: Sequence[str], output: str | None = None) -> Iterator[tuple[list[Path], Path | None]]:
    """Local folders for a step that reads and writes local paths only.

    Each s3:// input is materialised in a temporary folder (`download_dir`); the output, when s3://,
    is a fresh temporary folder published with `upload_dir` only if the block succeeds. Local paths
    pass through unchanged. Temporary folders go under $VIDEOSSL_STAGING (default: the system tmp)
    and are removed at the end.
    """
    with ExitStack() as stack:
        def tmpdir(label: str) -> Path:
            d = Path(tempfile.mkdtemp(prefix=f"videossl-{label}-", dir=os.environ.get("VIDEOSSL_STAGING")))
            stack.callback(shutil.rmtree, d, ignore_errors=True)
            return d

        local_inputs = [download_dir(u, tmpdir("in")) if is_s3(u) else Path(u) for u in inputs]
        if output is None or not is_s3(output):
            yield local_inputs, (Path(output) if output is not None else None)
            return
        out = tmpdir("out")
        yield local_inputs, out
        upload_dir(out, output)


# ----------------------------------------------------------------------------------------------
# local files


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import, before any thread
    os.umask(mask)
    return mask


UMASK = _read_umask()


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; rename it onto `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes 0600; an output gets the mode open() would give it
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


def put_text(dest: str | os.PathLike, text: str) -> str:
    """`text` at a local path (atomically) or an s3:// URI (a single put is atomic there)."""
    if is_s3(dest):
        return write_bytes(str(dest), text.encode())
    return str(write_text_atomic(dest, text))
