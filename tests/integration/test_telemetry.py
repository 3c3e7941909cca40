"""Observability of a training run: the /metrics endpoint (scraped by a real Prometheus server),
taken ports, the console line, MLflow system metrics, and a real trainer process scraped while it runs."""
from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from mlflow import MlflowClient
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import HOST, free_port
from tests.tiny import REPO, tiny_config, tiny_params_yaml
from videossl.models.vit import VitShape
from videossl.monitoring import start_metrics_server
from videossl.train.distributed import DistEnv
from videossl.train.telemetry import GAUGES, Telemetry

SHAPE = VitShape(frames=8, img_size=32, patch=8, tubelet=2, dim=32, depth=1, heads=2)
NODE1 = DistEnv(rank=2, world=4, local_rank=0, local_world=2)  # local rank 0 of node 1: /metrics, no MLflow

# Every wait here is for an event (a scrape, a sample, an exit); this bound only stops a hung test,
# so it is minutes, not what a quiet machine needs (CI machines are shared and loaded).
GENEROUS = 300


def scrape(port: int) -> dict[str, tuple[dict[str, str], float]]:
    """name -> (labels, value) of every sample on http://127.0.0.1:port/metrics."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {s.name: (dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples}


def refused(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2)
    except urllib.error.URLError as e:
        return isinstance(e.reason, ConnectionRefusedError)
    return False


def taken_port() -> socket.socket:
    """A socket listening on all interfaces, as another job on the node would (close it when done)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("0.0.0.0", 0))
    s.listen()
    return s


@pytest.fixture(autouse=True)
def _single_node_env(monkeypatch):
    monkeypatch.delenv("GROUP_RANK", raising=False)


def test_metrics_server_serves_its_own_registry_on_a_free_port_and_frees_it():
    registry = CollectorRegistry()
    Gauge("videossl_test_value", "a value", registry=registry).set(4.5)
    server = start_metrics_server(0, registry, "127.0.0.1")
    assert server is not None and server.port > 0
    assert scrape(server.port)["videossl_test_value"][1] == 4.5
    assert "python_gc_objects_collected_total" not in scrape(server.port)  # not the process-wide registry
    server.stop()
    server.stop()  # idempotent
    assert refused(server.port)
    again = start_metrics_server(server.port, registry, "127.0.0.1")  # the port is free for the next run on the node
    assert again is not None and again.port == server.port
    again.stop()


def test_metrics_server_off_or_on_a_taken_port_is_no_error(caplog):
    assert start_metrics_server(None, CollectorRegistry(), "127.0.0.1") is None
    with taken_port() as other, caplog.at_level(logging.WARNING, logger="videossl.monitoring"):
        port = other.getsockname()[1]
        assert start_metrics_server(port, CollectorRegistry(), "127.0.0.1") is None
    assert "training goes on without it" in caplog.text and f":{port} " in caplog.text


def test_telemetry_exports_the_logged_step_with_labels_and_stops_the_endpoint(tmp_path, capsys):
    cfg = tiny_config(tmp_path, "pretrain.metrics_port=0", "pretrain.batch_size=8")
    with Telemetry(cfg, "video", NODE1, SHAPE, n_params=1234) as telemetry:
        port = telemetry.metrics_port
        telemetry.step(10, 100, loss=0.75, lr=1e-3, clips_s=80.0, tokens_s=5120.0, wait_frac=0.02, elapsed=1.0)
        telemetry.step(20, 100, loss=0.5, lr=2e-3, clips_s=40.0, tokens_s=2560.0, wait_frac=0.03, elapsed=3.0)
        samples = scrape(port)
    assert refused(port)  # stopped on the way out

    labels, _ = samples["videossl_train_clips_per_second"]
    assert labels == {"variant": "video", "node": "1", "rank": "2"}
    value = {name: samples[f"videossl_train_{name}"][1] for name in GAUGES}
    assert value["step"] == 20 and value["total_steps"] == 100 and value["loss"] == 0.5
    assert value["clips_per_second"] == 40.0 and value["tokens_per_second"] == 2560.0
    assert value["step_seconds"] == pytest.approx(8 / 40.0)  # global batch / clips per second
    assert value["data_wait_fraction"] == 0.03 and value["learning_rate"] == 2e-3
    assert 0 < value["eta_seconds"] < 80 * 0.2 and abs(value["last_log_timestamp_seconds"] - time.time()) < 60
    assert samples["videossl_train_run_info"][0]["encoder_params"] == "1234"
    assert not any(name.startswith("videossl_train_gpu") for name in samples)  # no GPU here: no zero gauges

    out = capsys.readouterr().out
    assert f"Prometheus metrics on port {port}" in out
    assert "pretrain[video] node 1 step 20/100 (20%) loss 0.5000" in out and "200 ms/step" in out and "eta " in out


def test_taken_port_is_a_warning_and_the_run_goes_on(tmp_path, caplog):
    with taken_port() as other, caplog.at_level(logging.WARNING):
        cfg = tiny_config(tmp_path, f"pretrain.metrics_port={other.getsockname()[1]}")
        with Telemetry(cfg, "frames", NODE1, SHAPE, n_params=1) as telemetry:
            assert telemetry.metrics_port is None
            telemetry.step(1, 2, 1.0, 1e-3, 10.0, 100.0, 0.0, 0.5)
    assert "cannot listen" in caplog.text


def test_prometheus_scrapes_the_trainer_endpoint(tmp_path, prometheus):  # noqa: F811
    port = free_port()
    prom = prometheus(f"{HOST}:{port}", job="videossl-trainer")
    cfg = tiny_config(tmp_path, f"pretrain.metrics_port={port}")
    with Telemetry(cfg, "video", NODE1, SHAPE, n_params=1) as telemetry:
        telemetry.step(5, 50, 0.9, 1e-3, 123.0, 7872.0, 0.04, 0.5)
        (labels, clips), = prom.wait_for('videossl_train_clips_per_second{job="videossl-trainer"}')
        assert clips == 123.0 and labels["variant"] == "video" and labels["instance"] == f"{HOST}:{port}"
        assert prom.query('up{job="videossl-trainer"}')[0][1] == 1
    prom.wait_for('up{job="videossl-trainer"} == 0', timeout=GENEROUS)  # the endpoint went away with the run


def test_real_training_run_is_scraped_while_it_runs(tmp_path, tiny_data, prometheus):
    """A real trainer process (videossl.train.main, tiny model) serves /metrics on local rank 0;
    Prometheus scrapes it; Ctrl-C ends it cleanly: endpoint down, MLflow run FAILED with system metrics."""
    port = free_port()
    prom = prometheus(f"{HOST}:{port}", job="trainer")
    steps = 100_000  # never reached: the test interrupts the run once Prometheus has seen it
    config = tmp_path / "params.yaml"
    config.write_text(tiny_params_yaml(tmp_path, f"pretrain.steps={steps}", "pretrain.log_every=5",
                                       "pretrain.threads=1", f"pretrain.metrics_port={port}",
                                       "pretrain.system_metrics_interval=0.5"))
    log = tmp_path / "trainer.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "videossl.train.main", "--config", str(config),
                                 "--data", str(tiny_data), "--out", str(tmp_path / "out"), "--variants", "video"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                # a suite started in the background inherits SIGINT ignored, and Python then
                                # installs no Ctrl-C handler: give the trainer the default disposition
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        alive = lambda: proc.poll() is None  # noqa: E731
        try:
            series = prom.wait_for('videossl_train_step{job="trainer", variant="video"} >= 10', timeout=GENEROUS, alive=alive)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- trainer log ---\n{log.read_text(errors='replace')}") from None
        assert series[0][0]["node"] == "0" and series[0][0]["rank"] == "0"
        value = {name: prom.query(f'videossl_train_{name}{{job="trainer"}}')[0][1] for name in GAUGES}
        assert value["clips_per_second"] > 0 and value["tokens_per_second"] > value["clips_per_second"]
        assert value["step_seconds"] > 0 and 0 <= value["data_wait_fraction"] < 1
        assert math.isfinite(value["loss"]) and value["loss"] > 0 and value["total_steps"] == steps
        assert value["learning_rate"] > 0 and value["eta_seconds"] > 0
        assert prom.query('up{job="trainer"}')[0][1] == 1

        # MLflow samples system metrics on its own thread: wait for the first sample (a loaded CI
        # machine can be slower than the sampling interval) before interrupting the run
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns.db")
        deadline = time.monotonic() + GENEROUS
        while alive() and time.monotonic() < deadline:
            runs = client.search_runs([client.get_experiment_by_name("videossl").experiment_id])
            if runs and "system/cpu_utilization_percentage" in runs[0].data.metrics:
                break
            time.sleep(0.5)

        proc.send_signal(signal.SIGINT)  # Ctrl-C: the loop unwinds through Telemetry.__exit__
        proc.wait(timeout=GENEROUS)  # a bound for a hung process, not a speed test
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert f"Prometheus metrics on port {port}" in text and " clips/s " in text and " eta " in text, text

    (run,) = client.search_runs([client.get_experiment_by_name("videossl").experiment_id])
    assert run.info.status == "KILLED"  # interrupted, and marked so (tests/integration/test_run_status.py)
    assert run.data.metrics["clips_per_second"] > 0 and "step_seconds" in run.data.metrics
    assert "system/cpu_utilization_percentage" in run.data.metrics, sorted(run.data.metrics)
