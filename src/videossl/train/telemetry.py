"""What a training run reports while it runs: a console line with ETA on local rank 0 of every node,
and the MLflow run on global rank 0 (params, loss, lr, throughput per logged step).

One object per run (`Telemetry`), used as a context manager: an exception inside ends the MLflow
run as FAILED. Other sinks (a Prometheus /metrics endpoint) belong here too, not in the loop.
"""
from __future__ import annotations

from videossl.config import Config
from videossl.models.vit import VitShape
from videossl.train.distributed import DistEnv


class Telemetry:
    """Console progress (local rank 0) + the MLflow run (global rank 0) of one pretraining."""

    def __init__(self, cfg: Config, variant: str, env: DistEnv, shape: VitShape, n_params: int):
        self.variant, self.env = variant, env
        self.mlflow = self.ctx = None
        if env.is_main:
            import mlflow

            from videossl import tracking

            self.mlflow = mlflow
            self.ctx = tracking.run(cfg.tracking, f"pretrain-{variant}", tags={"step": "pretrain", "variant": variant})
            self.params = {**tracking.flat_params(cfg.model_dump(mode="json")), "variant": variant,
                           "world_size": env.world, "encoder_params": n_params, "tokens_per_clip": shape.num_tokens}

    def __enter__(self) -> "Telemetry":
        if self.ctx is not None:
            self.ctx.__enter__()
            self.mlflow.log_params(self.params)
        return self

    def __exit__(self, *exc) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)

    def step(self, step: int, total: int, loss: float, lr: float, clips_s: float, tokens_s: float,
             wait_frac: float, elapsed: float) -> None:
        eta = elapsed / step * (total - step)
        node = f" node {self.env.rank // self.env.local_world}" if self.env.world > self.env.local_world else ""
        print(f"pretrain[{self.variant}]{node} step {step}/{total} loss {loss:.4f} lr {lr:.2e} "
              f"{clips_s:.1f} clips/s data-wait {wait_frac:.1%} eta {eta:.0f}s", flush=True)
        if self.mlflow is None:
            return
        self.mlflow.log_metrics({"loss": loss, "lr": lr, "clips_per_second": clips_s, "tokens_per_second": tokens_s,
                                 "data_wait_fraction": wait_frac}, step=step)

    def log_result(self, result: dict) -> None:
        if self.mlflow is None:
            return
        self.mlflow.log_metrics({f"final_{k}": float(v) for k, v in result.items() if isinstance(v, (int, float))})
