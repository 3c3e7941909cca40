"""What a training run reports while it runs, and where:

- the console, local rank 0 of every node: one line per logged step with throughput and an ETA;
- a Prometheus /metrics endpoint, local rank 0 of every node (`pretrain.metrics_port`): gauges of the
  last logged step (step time, clips/s, tokens/s, data-wait fraction, loss, lr, step, ETA, GPU memory)
  labelled with variant, node and rank, in a registry of its own;
- the MLflow run, global rank 0 only: params, the same numbers per logged step, the final result,
  and MLflow's system metrics (CPU, memory, disk, network, GPU) every `pretrain.system_metrics_interval` s.

One object per run (`Telemetry`), used as a context manager: an exception inside ends the MLflow
run as FAILED, and the /metrics endpoint is always shut down (its port freed) on the way out.
Monitoring never stops training: a taken port is a warning and the run goes on without the endpoint.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from prometheus_client import CollectorRegistry, Gauge, Info

from videossl.config import Config
from videossl.models.vit import VitShape
from videossl.monitoring import METRIC_PREFIX, MetricsServer, start_metrics_server
from videossl.train.distributed import DistEnv

PROM = f"{METRIC_PREFIX}_train"
LABELS = ("variant", "node", "rank")
ETA_SMOOTHING = 0.3  # weight of the newest interval in the step-time average behind the ETA

# name -> help; all gauges of the last logged step
GAUGES = {
    "step": "current optimizer step",
    "total_steps": "optimizer steps of the run",
    "step_seconds": "seconds per step over the last log interval (data wait included)",
    "clips_per_second": "clips per second over the last log interval, all ranks together",
    "tokens_per_second": "encoder tokens per second over the last log interval, all ranks together",
    "data_wait_fraction": "share of the run's wall time spent waiting for the data loader",
    "loss": "training loss of the last logged step (global batch)",
    "learning_rate": "learning rate of the last logged step",
    "eta_seconds": "estimated seconds to the last step",
    "last_log_timestamp_seconds": "unix time of the last logged step (alert when it stops moving)",
}
GPU_GAUGES = {
    "gpu_memory_allocated_bytes": "GPU memory held by tensors now (torch.cuda.memory_allocated)",
    "gpu_memory_reserved_bytes": "GPU memory held by the caching allocator (torch.cuda.memory_reserved)",
    "gpu_max_memory_allocated_bytes": "peak GPU memory held by tensors (torch.cuda.max_memory_allocated)",
}


def node_rank(env: DistEnv) -> int:
    """This process's node: torchrun's GROUP_RANK, else rank // processes per node."""
    return int(os.environ.get("GROUP_RANK", env.rank // max(1, env.local_world)))


def gpu_memory() -> dict[str, float]:
    """Memory counters of this process's current GPU; empty without one (or before CUDA is used)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {"gpu_memory_allocated_bytes": float(torch.cuda.memory_allocated()),
            "gpu_memory_reserved_bytes": float(torch.cuda.memory_reserved()),
            "gpu_max_memory_allocated_bytes": float(torch.cuda.max_memory_allocated())}


def duration(seconds: float) -> str:
    """1h02m, 3m07s, 42s."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@contextmanager
def system_metrics(interval: float | None) -> Iterator[None]:
    """MLflow system metrics for the run started inside (on every sampling `interval` seconds; None:
    none). MLflow reads these switches from the environment when a run starts: they are set for that
    moment only, so nothing leaks into other runs of this process or its children."""
    from mlflow.environment_variables import (MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING,
                                              MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL)

    values = {MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.name: "true" if interval else "false"}
    if interval:
        values[MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.name] = str(interval)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Telemetry:
    """Console progress + /metrics (local rank 0 of each node) + the MLflow run (global rank 0)."""

    def __init__(self, cfg: Config, variant: str, env: DistEnv, shape: VitShape, n_params: int,
                 dataset: tuple[str, str] | None = None, init: dict | None = None):
        self.variant, self.env, self.cfg = variant, env, cfg
        self.node = node_rank(env)
        self.step_ema: float | None = None
        self.server: MetricsServer | None = None

        # Prometheus: a registry of our own (never the process-wide default: no clashes between runs)
        self.registry = CollectorRegistry()
        labels = {"variant": variant, "node": str(self.node), "rank": str(env.rank)}
        self.gauges = {name: Gauge(f"{PROM}_{name}", doc, LABELS, registry=self.registry).labels(**labels)
                       for name, doc in GAUGES.items()}
        if torch.cuda.is_available():
            self.gauges.update({name: Gauge(f"{PROM}_{name}", doc, LABELS, registry=self.registry).labels(**labels)
                                for name, doc in GPU_GAUGES.items()})
        Info(f"{PROM}_run", "what this trainer runs", LABELS, registry=self.registry).labels(**labels).info(
            {"encoder_params": str(n_params), "tokens_per_clip": str(shape.num_tokens), "world_size": str(env.world),
             "batch_size": str(cfg.pretrain.batch_size), "hostname": socket.gethostname()})

        self.mlflow = self.ctx = None
        if env.is_main:
            import mlflow

            from videossl import tracking

            self.mlflow = mlflow
            self.ctx = tracking.run(cfg.tracking, f"pretrain-{variant}", tags={"step": "pretrain", "variant": variant},
                                    dataset=dataset)
            self.params = {**tracking.flat_params(cfg.model_dump(mode="json")), "variant": variant,
                           "world_size": env.world, "encoder_params": n_params, "tokens_per_clip": shape.num_tokens,
                           **({"init_sha256": init["sha256"]} if init else {})}  # pretrain.init_from's weights

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on (None: no endpoint)."""
        return self.server.port if self.server else None

    def __enter__(self) -> "Telemetry":
        self.server = start_metrics_server(self.cfg.pretrain.metrics_port, self.registry, self.cfg.pretrain.metrics_host)
        if self.server is not None:
            print(f"pretrain[{self.variant}]{self._where()}: Prometheus metrics on port {self.server.port} "
                  f"(http://{socket.gethostname()}:{self.server.port}/metrics)", flush=True)
        try:
            if self.ctx is not None:
                with system_metrics(self.cfg.pretrain.system_metrics_interval):
                    self.ctx.__enter__()
                self.mlflow.log_params(self.params)
        except BaseException:
            self._stop_server()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.ctx is not None:
                self.ctx.__exit__(*exc)
        finally:
            self._stop_server()

    def _stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _where(self) -> str:
        return f" node {self.node}" if self.env.world > self.env.local_world else ""

    def step(self, step: int, total: int, loss: float, lr: float, clips_s: float, tokens_s: float,
             wait_frac: float, elapsed: float, objective_logs: dict[str, float] | None = None) -> None:
        """Report the logged `step` (1-based): console, /metrics, MLflow. The step time is the global
        batch over `clips_s` (what the loop's clips/s is made of); `objective_logs` are the
        objective's own numbers (e.g. pretext accuracies, per-part losses), logged to MLflow."""
        step_seconds = self.cfg.pretrain.batch_size / max(clips_s, 1e-9)
        # ETA from recent steps (a smoothed step time): right after a resume, and as speed changes
        self.step_ema = step_seconds if self.step_ema is None else (
            self.step_ema + ETA_SMOOTHING * (step_seconds - self.step_ema))
        eta = self.step_ema * (total - step)
        memory = gpu_memory()

        print(f"pretrain[{self.variant}]{self._where()} step {step}/{total} ({step / total:.0%}) loss {loss:.4f} "
              f"lr {lr:.2e} {clips_s:.1f} clips/s {step_seconds * 1e3:.0f} ms/step data-wait {wait_frac:.1%}"
              f"{_gpu_text(memory)} elapsed {duration(elapsed)} eta {duration(eta)}", flush=True)

        values = {"step": step, "total_steps": total, "step_seconds": step_seconds, "clips_per_second": clips_s,
                  "tokens_per_second": tokens_s, "data_wait_fraction": wait_frac, "loss": loss,
                  "learning_rate": lr, "eta_seconds": eta, "last_log_timestamp_seconds": time.time(), **memory}
        for name, value in values.items():
            if name in self.gauges:
                self.gauges[name].set(float(value))

        if self.mlflow is None:
            return
        metrics = {"loss": loss, "lr": lr, "clips_per_second": clips_s, "tokens_per_second": tokens_s,
                   "data_wait_fraction": wait_frac, "step_seconds": step_seconds}
        if memory:
            metrics["gpu_max_memory_allocated_gib"] = memory["gpu_max_memory_allocated_bytes"] / 2**30
        metrics.update({f"objective/{k}": float(v) for k, v in (objective_logs or {}).items()})
        self.mlflow.log_metrics(metrics, step=step)

    def log_result(self, result: dict) -> None:
        if self.mlflow is None:
            return
        self.mlflow.log_metrics({f"final_{k}": float(v) for k, v in result.items() if isinstance(v, (int, float))})


def _gpu_text(memory: dict[str, float]) -> str:
    if not memory:
        return ""
    return f" gpu-mem {memory['gpu_max_memory_allocated_bytes'] / 2**30:.1f} GiB peak"
