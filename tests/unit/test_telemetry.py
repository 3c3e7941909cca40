"""Telemetry settings: the metrics-port params, the MLflow system-metrics switch, the duration format."""
from __future__ import annotations

import os

import pytest

from tests.tiny import tiny_config
from videossl.config import ConfigError
from videossl.train.telemetry import duration, system_metrics

@pytest.fixture(autouse=True)
def _single_node_env(monkeypatch):
    monkeypatch.delenv("GROUP_RANK", raising=False)


def test_metrics_port_params(tmp_path):
    assert tiny_config(tmp_path).pretrain.metrics_port == 9400  # the params.yaml default
    assert tiny_config(tmp_path, "pretrain.metrics_port=null").pretrain.metrics_port is None
    assert tiny_config(tmp_path, "pretrain.metrics_port=0").pretrain.metrics_port == 0
    for bad in ("-1", "70000"):
        with pytest.raises(ConfigError, match="pretrain.metrics_port"):
            tiny_config(tmp_path, f"pretrain.metrics_port={bad}")
    with pytest.raises(ConfigError, match="pretrain.system_metrics_interval"):
        tiny_config(tmp_path, "pretrain.system_metrics_interval=0")


def test_system_metrics_switch_is_set_only_while_the_run_starts(monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "99")
    with system_metrics(0.5):
        assert os.environ["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] == "true"
        assert os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] == "0.5"
    assert "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING" not in os.environ
    assert os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] == "99"
    with system_metrics(None):
        assert os.environ["MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"] == "false"


def test_duration_format():
    assert [duration(s) for s in (0.4, 42, 187, 3725)] == ["0s", "42s", "3m07s", "1h02m"]
