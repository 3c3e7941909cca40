"""Real servers on loopback for the tests: an S3 endpoint (moto_server), a Prometheus pushgateway and a
Prometheus server.

Each server is a subprocess in its own process group, bound to 127.0.0.1 on a free port, with its
output in a log file. It is waited for with a deadline (its log is shown if it never answers) and
the whole process group is always killed at teardown. S3 and the pushgateway are session-scoped: start
once, share between tests; tests keep apart by using their own bucket / key / grouping labels. A
Prometheus server scrapes fixed targets, so each test starts its own (about a second).

    def test_x(s3_server):          # S3Server: .endpoint_url, .env, .client(), .make_bucket()
    def test_y(pushgateway):        # Pushgateway: .address (host:port for push_to_gateway), .samples()
    def test_z(prometheus):         # prometheus("127.0.0.1:PORT") -> PrometheusServer scraping that target
                                    # every second: .query(expr), .wait_for(expr, ...), .url
                                    # (not in conftest yet: `from tests.servers import prometheus`)

Re-exported by tests/conftest.py, so any test module can ask for them by name; helpers import as
`from tests.servers import free_port, running_server, ...`.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0

# Dummy credentials: moto accepts any; they must exist or boto3 refuses to sign requests.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_SESSION_TOKEN": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",   # never wait for an instance-metadata endpoint
    "AWS_CONFIG_FILE": os.devnull,          # a developer's ~/.aws must not leak into the tests
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}



def debian_binary(name: str) -> str:
    """Path of a server binary from the Debian package of the same name, or a failed test (never a
    skip) saying how to install it: `make test` set-up apt-get installs it."""
    path = f"/usr/bin/{name}"
    found = shutil.which(name) or (path if os.access(path, os.X_OK) else None)
    if not found:
        pytest.fail(f"{name} not found on PATH or at {path}: run the test setup first (`make test` apt-get "
                    f"installs it), or by hand: apt-get install -y --no-install-recommends {name}", pytrace=False)
    return found


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when an HTTP server answers `url` with a non-5xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Terminate the server's whole process group; kill it if it does not exit in time."""
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        else:  # the leader is gone; children it left in the group must go too
            _signal_group(self.proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the leader's pid
    except ProcessLookupError:
        pass


@contextmanager
def running_server(name: str, argv: list[str], ready_url: str, log_dir: Path,
                   env: dict[str, str] | None = None, timeout: float = START_TIMEOUT_S,
                   drop_env: tuple[str, ...] = ()) -> Iterator[ServerProcess]:
    """Start `argv`, wait until `ready_url` answers, yield; always stop it (process group) afterwards.
    The server inherits this environment, less the variables starting with a `drop_env` prefix, plus `env`.

    Fails with the server's log when it exits early or does not answer within `timeout` seconds.
    """
    log = Path(log_dir) / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**{k: v for k, v in os.environ.items() if not k.startswith(drop_env or ("\0",))},
                                     **(env or {})}, start_new_session=True)
    server = ServerProcess(name, proc, log)
    try:
        deadline = time.monotonic() + timeout
        while not answers(ready_url):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} before answering {ready_url}; "
                                   f"command: {' '.join(argv)}\n--- {log} ---\n{server.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {ready_url} within {timeout:.0f} s; "
                                   f"command: {' '.join(argv)}\n--- {log} ---\n{server.log_text()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------------
# S3 (moto_server)


@dataclass
class S3Server:
    endpoint_url: str
    env: dict[str, str] = field(default_factory=lambda: dict(S3_ENV))

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def make_bucket(self, name: str) -> str:
        """Create bucket `name` (fine if it exists) and return it."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)
        return name


@contextmanager
def moto_s3(log_dir: Path) -> Iterator[S3Server]:
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]  # the same as `moto_server`
    url = f"http://{HOST}:{port}"
    with running_server("moto_server", argv, f"{url}/moto-api/", log_dir):
        yield S3Server(url)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real S3 endpoint on loopback. Dummy AWS credentials are in os.environ for the session, so
    code under test (boto3's default chain) signs its requests; pass `endpoint_url` explicitly."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in S3_ENV.items():
            mp.setenv(key, value)
        with moto_s3(tmp_path_factory.mktemp("moto")) as server:
            yield server


# ----------------------------------------------------------------------------------------------
# Prometheus pushgateway


@dataclass
class Pushgateway:
    address: str  # host:port, what `ingest.pushgateway` and prometheus_client.push_to_gateway take

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return r.read().decode()

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every sample of metric `name` on /metrics whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families

        found = []
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    found.append((dict(s.labels), s.value))
        return found


@contextmanager
def prometheus_pushgateway(log_dir: Path) -> Iterator[Pushgateway]:
    address = f"{HOST}:{free_port()}"
    argv = [debian_binary("prometheus-pushgateway"), f"--web.listen-address={address}",
            f"--persistence.file={Path(log_dir) / 'pushgateway.state'}"]
    with running_server("pushgateway", argv, f"http://{address}/-/ready", log_dir):
        yield Pushgateway(address)


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory) -> Iterator[Pushgateway]:
    """A real Prometheus pushgateway on loopback (fails, never skips, when the binary is missing)."""
    with prometheus_pushgateway(tmp_path_factory.mktemp("pushgateway")) as gateway:
        yield gateway


# ----------------------------------------------------------------------------------------------
# Prometheus server (scrapes the targets a test names)




@dataclass
class PrometheusServer:
    url: str   # http://127.0.0.1:PORT
    job: str   # the scrape job of the targets (`up{job=...}`)
    targets: list[str]

    def api(self, path: str, **params: str) -> dict:
        """GET /api/v1/<path>; the `data` of a successful answer."""
        import json
        import urllib.parse

        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as r:
            body = json.loads(r.read().decode())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus /api/v1/{path}?{query}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of each series of an instant query (PromQL `expr`)."""
        return [(r["metric"], float(r["value"][1])) for r in self.api("query", query=expr)["result"]]

    def wait_for(self, expr: str, timeout: float = 180.0, until=bool, alive=lambda: True) -> list[tuple[dict, float]]:
        """Poll `expr` until `until(result)` holds; fail after `timeout` s, or as soon as `alive()` is false."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if until(result):
                return result
            if time.monotonic() > deadline or not alive():
                targets = self.api("targets")["activeTargets"]
                health = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
                raise AssertionError(f"Prometheus query {expr!r} gave {result} (wanted otherwise) "
                                     f"{'within ' + str(timeout) + ' s' if alive() else 'before the target ended'}; "
                                     f"targets: {health}")
            time.sleep(0.25)


@contextmanager
def prometheus_server(log_dir: Path, targets: list[str], job: str = "videossl",
                      scrape_interval: str = "1s") -> Iterator[PrometheusServer]:
    """A Prometheus server on loopback scraping `targets` (host:port, path /metrics) every `scrape_interval`."""
    log_dir = Path(log_dir)
    config = log_dir / "prometheus.yml"
    quoted = ", ".join(f'"{t}"' for t in targets)
    config.write_text(f"""global:
  scrape_interval: {scrape_interval}
  scrape_timeout: {scrape_interval}
  evaluation_interval: {scrape_interval}
scrape_configs:
  - job_name: "{job}"
    static_configs:
      - targets: [{quoted}]
""")
    address = f"{HOST}:{free_port()}"
    argv = [debian_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={log_dir / 'tsdb'}",
            f"--web.listen-address={address}"]
    with running_server("prometheus", argv, f"http://{address}/-/ready", log_dir):
        yield PrometheusServer(f"http://{address}", job, list(targets))


@pytest.fixture
def prometheus(tmp_path_factory) -> Iterator:
    """Start real Prometheus servers on loopback: `prometheus(*targets, job=..., scrape_interval="1s")`
    returns a running PrometheusServer; all are stopped when the test ends (fails, never skips, when the
    binary is missing)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        def start(*targets: str, job: str = "videossl", scrape_interval: str = "1s") -> PrometheusServer:
            log_dir = tmp_path_factory.mktemp("prometheus")
            return stack.enter_context(prometheus_server(log_dir, list(targets), job, scrape_interval))

        yield start


def closed_address() -> str:
    """host:port where nothing listens (a port that was just free): for "unreachable server" tests."""
    return f"{HOST}:{free_port()}"


__all__ = ["S3Server", "Pushgateway", "PrometheusServer", "ServerProcess", "answers", "closed_address", "free_port",
           "moto_s3", "prometheus", "prometheus_pushgateway", "prometheus_server", "pushgateway", "running_server",
           "s3_server"]
