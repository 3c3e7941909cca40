"""Prometheus, both ways it is fed.

- Batch steps (ingest, ...) push their summary to a pushgateway when one is configured. With no
  gateway configured nothing is pushed and nothing fails; a configured but unreachable gateway is a
  warning: monitoring must never lose a finished step's work.
- Long-running processes (the trainer, on local rank 0 of every node) serve a /metrics endpoint that
  Prometheus scrapes (a PodMonitor on the cluster). A port that is taken is a warning, never a crash.
"""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

log = logging.getLogger(__name__)
METRIC_PREFIX = "videossl"
PUSH_TIMEOUT_S = 10


def push_step_metrics(gateway: str | None, step: str, metrics: dict[str, float],
                      grouping: dict[str, str] | None = None) -> bool:
    """Push gauges `videossl_<step>_<name>` to the gateway under job `videossl_<step>`. True if pushed."""
    if not gateway:
        return False
    registry = CollectorRegistry()
    for name, value in metrics.items():
        Gauge(f"{METRIC_PREFIX}_{step}_{name}", f"{step} step: {name.replace('_', ' ')}",
              registry=registry).set(float(value))
    try:
        push_to_gateway(gateway, job=f"{METRIC_PREFIX}_{step}", registry=registry,
                        grouping_key=grouping or {}, timeout=PUSH_TIMEOUT_S)
    except OSError as e:
        log.warning("could not push metrics to pushgateway %s: %s", gateway, e)
        return False
    return True


# ----------------------------------------------------------------------------------------------
# /metrics endpoint of a long-running process (the trainer: local rank 0 of every node)


class MetricsServer:
    """A running Prometheus /metrics endpoint over one registry; `stop()` shuts it down and frees the port."""

    def __init__(self, server, thread, addr: str):
        self._server, self._thread = server, thread
        self.addr, self.port = addr, int(server.server_port)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "::", "") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()      # ends serve_forever (waits at most its 0.5 s poll)
        self._server.server_close()  # frees the port for the next run on this node
        self._thread.join(timeout=5)
        self._server = None


def start_metrics_server(port: int | None, registry: CollectorRegistry, addr: str) -> MetricsServer | None:
    """Serve `registry` on http://addr:port/metrics from a daemon thread.

    `port=None`: no endpoint. `port=0`: the kernel picks a free port (read it from `.port`). A port
    that is taken (two jobs on one node) or refused is a warning and None: monitoring must never
    stop a training run.
    """
    if port is None:
        return None
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as e:
        log.warning("no Prometheus /metrics endpoint: cannot listen on %s:%s (%s); training goes on without it",
                    addr, port, e.strerror or e)
        return None
    return MetricsServer(server, thread, addr)
