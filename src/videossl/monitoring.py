"""Prometheus: batch steps push their summary to a pushgateway when one is configured.

With no gateway configured nothing is pushed and nothing fails. A gateway that is configured but
unreachable is reported as a warning: monitoring must never lose a finished step's work.
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
