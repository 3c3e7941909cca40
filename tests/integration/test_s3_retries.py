"""S3 under failure: a server that restarts mid-operation, one that is gone for good, a writer killed
mid-folder, an object that does not match its manifest. All against real moto servers on loopback.

moto keeps its state in memory, so a restart loses every object and multipart upload. The
restartable server here re-creates its bucket before it listens again (a MinIO pod restarting keeps
its buckets), so what a retry meets after the restart is what a real one would: an empty bucket
that no longer knows the upload in flight (`NoSuchUpload`). Folder atomicity is tested on the
session server instead, which keeps its state, by killing the *writer*.
"""
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.servers import HOST, S3_ENV, ServerProcess, answers, free_port
from videossl import storage

BUCKET = "retries"
MB = 1 << 20

# moto_server's own app and request handler, run the way `moto_server` runs them, with two changes:
# the bucket exists before the port opens (created in-process), and each multipart part is stored
# PART_DELAY_S late, like a server with slow disks, so that "kill it while an upload is in flight"
# is not a race the upload can win on a fast loopback.
PART_DELAY_S = 0.3
_SERVER = """
import sys, time
from moto.s3.models import s3_backends
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple
port, bucket, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s3_backends["123456789012"]["aws"].create_bucket(bucket, "us-east-1")
moto_app = DomainDispatcherApplication(create_backend_app)

def app(environ, start_response):
    if "partNumber=" in environ.get("QUERY_STRING", ""):
        time.sleep(delay)
    return moto_app(environ, start_response)

run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
"""


class RestartableS3:
    """moto_server on a fixed port that can be killed (SIGKILL, like a crashed pod) and started again."""

    def __init__(self, log_dir: Path, bucket: str = BUCKET):
        self.port, self.bucket, self.log_dir = free_port(), bucket, log_dir
        self.endpoint_url = f"http://{HOST}:{self.port}"
        self.server: ServerProcess | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        log = self.log_dir / f"moto-{self.starts}.log"
        with open(log, "wb") as out:
            argv = [sys.executable, "-c", _SERVER, str(self.port), self.bucket, str(PART_DELAY_S)]
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.server = ServerProcess("moto", proc, log)
        deadline = time.monotonic() + timeout
        while not answers(f"{self.endpoint_url}/moto-api/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.server.stop()
                raise RuntimeError(f"restartable moto did not start:\n{self.server.log_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        os.killpg(self.server.proc.pid, signal.SIGKILL)
        self.server.proc.wait(10)

    def stop(self) -> None:
        if self.server:
            self.server.stop()


@pytest.fixture()
def s3_env(monkeypatch):
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    for var in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def restartable(tmp_path, s3_env):
    server = RestartableS3(tmp_path)
    server.start()
    yield server
    server.stop()


def _random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def _bare_client(endpoint_url: str):
    """For the test's own probes: no retries, short timeouts, so probing never waits on an outage."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1,
                                      read_timeout=2))


def test_client_retries_connection_errors_with_backoff(s3_env, monkeypatch):
    client = storage.s3_client(f"http://{HOST}:{free_port()}")  # nothing listens there
    cfg = client.meta.config
    assert cfg.retries == {"mode": "standard", "total_max_attempts": storage.S3_MAX_ATTEMPTS}
    assert cfg.tcp_keepalive is True

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # the standard knob still works
    client = storage.s3_client(f"http://{HOST}:{free_port()}")
    sends = []
    client.meta.events.register("before-send.s3", lambda **kw: sends.append(time.monotonic()))
    from botocore.exceptions import EndpointConnectionError

    with pytest.raises(EndpointConnectionError):
        client.list_objects_v2(Bucket=BUCKET)
    assert len(sends) == 3  # refused connections are retried: 1 + 2 retries


def test_a_request_waits_out_a_short_outage(restartable):
    storage.upload(_random_file(restartable.log_dir / "small.bin", 1000), f"s3://{BUCKET}/before",
                   restartable.endpoint_url)
    restartable.kill()
    restarter = threading.Timer(2.0, restartable.start)
    restarter.start()
    t0 = time.monotonic()
    try:
        objects = storage.list_s3(f"s3://{BUCKET}/", restartable.endpoint_url)  # starts while the server is down
    finally:
        restarter.join()
    assert time.monotonic() - t0 > 1.5  # it waited for the server rather than failing at once
    assert objects == []  # the restarted server (in-memory) is empty, and the bucket answers


def test_an_upload_cut_by_a_server_restart_starts_again_and_completes(restartable, tmp_path, caplog, monkeypatch):
    # After the restart moto answers the forgotten upload's parts with a 500 (a KeyError inside moto),
    # which botocore rightly retries, where S3 and MinIO answer 404 NoSuchUpload, which it does not:
    # fewer tries per request keep this test from sitting through the whole ~35 s of backoff first.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    src = _random_file(tmp_path / "checkpoint.pt", 64 * MB)  # multipart: 8 parts of 8 MB
    uri = f"s3://{BUCKET}/runs/ckpt/step_00000100.pt"
    killed = threading.Event()

    def kill_once_the_upload_is_in_flight() -> None:
        # The moment: the server has answered CreateMultipartUpload (its access log line is written
        # after the response), so the client holds an upload id, and its parts are being stored.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if '?uploads HTTP/1.1" 200' in restartable.server.log_text():
                time.sleep(0.05)  # let the answer reach the client whole; the parts wait PART_DELAY_S
                restartable.kill()
                killed.set()
                time.sleep(0.5)  # a restart takes a moment: the client meets refused connections first
                restartable.start()
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_once_the_upload_is_in_flight)
    watcher.start()
    caplog.set_level(logging.WARNING, logger="videossl.storage")
    try:
        storage.upload(src, uri, restartable.endpoint_url)
    finally:
        watcher.join()
    assert killed.is_set(), "the server was never killed during the upload"
    # the restarted server had forgotten the multipart upload: the whole object was sent again
    assert any("attempt 1/3 failed" in r.getMessage() and "starting the object again" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    back = storage.download(uri, tmp_path / "back.pt", restartable.endpoint_url)
    assert back.stat().st_size == src.stat().st_size
    assert storage.file_md5(back) == storage.file_md5(src)


def test_an_upload_to_a_server_gone_for_good_fails_naming_object_and_endpoint(restartable, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # keep the give-up short: 3 objects x 2 requests
    src = _random_file(tmp_path / "shard_00000.npy", 1 * MB)
    restartable.kill()
    uri = f"s3://{BUCKET}/data/shard_00000.npy"
    t0 = time.monotonic()
    with pytest.raises(storage.StorageError) as err:
        storage.upload(src, uri, restartable.endpoint_url)
    msg = str(err.value)
    assert f"upload of {src} to {uri} failed after {storage.OBJECT_ATTEMPTS} attempts" in msg
    assert restartable.endpoint_url in msg and "Could not connect" in msg
    assert time.monotonic() - t0 >= storage.OBJECT_BACKOFF_S * 3  # it did back off between attempts (1 s + 2 s)


# ----------------------------------------------------------------------------------------------
# folders: a reader never sees a partial one


_PUBLISH = """
import sys
from pathlib import Path
from videossl.storage import upload_dir
upload_dir(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
"""


def _folder(root: Path, files: dict[str, int]) -> Path:
    for rel, size in files.items():
        _random_file(root / rel, size)
    return root


def test_a_writer_killed_mid_folder_leaves_nothing_readable(s3_server, tmp_path):
    bucket = s3_server.make_bucket("atomic-folders")
    uri = f"s3://{bucket}/runs/a1/data/ingest"
    ep = s3_server.endpoint_url
    # v1: a complete folder, published
    v1 = _folder(tmp_path / "v1", {"manifest.jsonl": 2000, "shards/shard_00000.npy": 3000})
    storage.upload_dir(v1, uri, ep)
    assert sorted(storage.read_complete(uri, ep)) == ["manifest.jsonl", "shards/shard_00000.npy"]

    # v2: republished by a process that is SIGKILLed once its first object has landed
    v2 = _folder(tmp_path / "v2", {"manifest.jsonl": 5000, **{f"shards/shard_{i:05d}.npy": 12 * MB for i in range(4)}})
    proc = subprocess.Popen([sys.executable, "-c", _PUBLISH, str(v2), uri, ep], env=os.environ.copy())
    probe = _bare_client(ep)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        listed = probe.list_objects_v2(Bucket=bucket, Prefix="runs/a1/data/ingest/").get("Contents", [])
        if any(o["Key"].endswith("manifest.jsonl") and o["Size"] == 5000 for o in listed):
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before it could be killed: use bigger files"

    # every object a reader can see is whole (no partial PUT or multipart upload is ever an object) ...
    seen = storage.list_s3(uri + "/", ep)
    assert seen
    for obj in seen:
        rel = obj.uri[len(uri) + 1:]
        whole = {storage.file_md5(v / rel) for v in (v1, v2) if (v / rel).is_file()}
        assert storage.file_md5(storage.download(obj.uri, tmp_path / "peek" / rel, ep)) in whole, obj
    # ... but the folder is not complete, and is not mistaken for v1 either: the old manifest went first
    with pytest.raises(storage.StorageError, match="no _COMPLETE manifest"):
        storage.download_dir(uri, tmp_path / "read", ep)
    assert not (tmp_path / "read").exists() or not any((tmp_path / "read").rglob("*"))

    # the retried task publishes it whole; now it reads back, every file checked
    storage.upload_dir(v2, uri, ep)
    back = storage.download_dir(uri, tmp_path / "read", ep)
    for path in v2.rglob("*"):
        if path.is_file():
            assert storage.file_md5(back / path.relative_to(v2)) == storage.file_md5(path)


@pytest.mark.parametrize("fault", ["lost", "replaced"])
def test_a_manifest_is_never_written_for_an_object_that_did_not_land_whole(s3_server, tmp_path, monkeypatch, fault):
    # An upload that reported success but left the object missing (a lifecycle rule, another writer's
    # delete) or different (another writer's PUT): the folder must not be sealed.
    bucket = s3_server.make_bucket("verified-folders")
    uri, ep = f"s3://{bucket}/runs/{fault}/out", s3_server.endpoint_url
    local = _folder(tmp_path / "v", {"a.bin": 3000, "b.bin": 4000})
    real_upload = storage.upload

    def faulty(path, dest, endpoint_url=None):
        real_upload(path, dest, endpoint_url)
        if dest.endswith("/b.bin"):
            client = _bare_client(ep)
            key = storage.split_s3(dest)[1]
            if fault == "lost":
                client.delete_object(Bucket=bucket, Key=key)
            else:
                client.put_object(Bucket=bucket, Key=key, Body=b"x" * 4000)  # same size, other bytes
        return dest

    monkeypatch.setattr(storage, "upload", faulty)
    with pytest.raises(storage.StorageError, match="b.bin.*_COMPLETE not written"):
        storage.upload_dir(local, uri, ep)
    with pytest.raises(storage.StorageError, match="no _COMPLETE manifest"):
        storage.read_complete(uri, ep)
    monkeypatch.setattr(storage, "upload", real_upload)
    storage.upload_dir(local, uri, ep)  # a clean retry seals it
    assert sorted(storage.read_complete(uri, ep)) == ["a.bin", "b.bin"]


def test_a_file_that_does_not_match_its_manifest_is_refused(s3_server, tmp_path):
    bucket = s3_server.make_bucket("atomic-folders")
    uri = f"s3://{bucket}/runs/a2/outputs/pretrain"
    ep = s3_server.endpoint_url
    storage.upload_dir(_folder(tmp_path / "out", {"encoder.pt": 4000, "pretrain.json": 100}), uri, ep)
    # a writer that does not follow the protocol replaces an object after the manifest was written
    s3_server.client().put_object(Bucket=bucket, Key="runs/a2/outputs/pretrain/encoder.pt", Body=b"truncated")
    dest = tmp_path / "read"
    with pytest.raises(storage.StorageError, match=r"encoder\.pt: md5 .* does not match"):
        storage.download_dir(uri, dest, ep)
    assert not (dest / "encoder.pt").exists()  # nothing unchecked is left where a step would read it
    assert not list(dest.rglob("*.part"))


def test_a_folder_written_file_by_file_reads_only_once_sealed(s3_server, tmp_path):
    """A cluster job's trainer writes each checkpoint atomically but no manifest; the pretrain task
    seals the folder once the job succeeded (`seal_dir`), and only then do readers accept it."""
    bucket = s3_server.make_bucket("atomic-folders")
    uri = f"s3://{bucket}/runs/a3/outputs/pretrain"
    ep = s3_server.endpoint_url
    files = {"encoder.pt": 9 * MB, "frame_encoder.pt": 1000}  # one multipart object, one single PUT
    src = _folder(tmp_path / "job", files)
    for rel in files:
        storage.upload(src / rel, storage.join(uri, rel), ep)
    with pytest.raises(storage.StorageError, match="no _COMPLETE manifest"):
        storage.download_dir(uri, tmp_path / "early", ep)

    storage.seal_dir(uri, list(files), ep)
    manifest = storage.read_complete(uri, ep)
    assert {rel: (e["md5"], e["size"]) for rel, e in manifest.items()} == {
        rel: (storage.file_md5(src / rel), size) for rel, size in files.items()}
    back = storage.download_dir(uri, tmp_path / "read", ep)
    assert all(storage.file_md5(back / rel) == storage.file_md5(src / rel) for rel in files)
