"""MLflow tracking: one place that points MLflow at the configured store and opens runs.

Only rank 0 logs (every rank would otherwise make its own run). When the platform hands us a run
(`MLFLOW_RUN_ID`, as KFP or a TrainJob may), we log into it instead of starting another.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from videossl.config import TrackingConfig
from videossl.errors import StepError


def _absolute_store(uri: str) -> str:
    # A relative sqlite path would land wherever the process happens to run (KFP, torchrun): pin it.
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def _artifact_root(uri: str, artifacts: str | None) -> str | None:
    """Where a new experiment keeps artifacts. Against a tracking server, the server decides (it
    proxies artifacts to its own store) unless params name a URI; local stores get a local folder."""
    if artifacts and ":/" in artifacts:
        return artifacts  # s3://..., mlflow-artifacts:/..., file:///...
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return Path(artifacts or "mlartifacts").resolve().as_uri()


def tracking_uri(cfg: TrackingConfig) -> str:
    """The store named in params; `tracking.uri: null` means the platform's MLFLOW_TRACKING_URI.

    Params win over the environment on purpose: mlflow.set_tracking_uri exports the variable to every
    child process, so an inherited value is not a reliable statement of where this run should log."""
    if cfg.uri:
        return _absolute_store(cfg.uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if not env:
        raise StepError("tracking.uri is null but MLFLOW_TRACKING_URI is not set: name a store in params")
    return env


EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# How long a tracking server may take to answer /health (a pod restarting, a rolling update) before
# a step gives up with one line; MLflow's own client would retry each call for minutes instead.
HEALTH_WAIT_S = 30.0
HEALTH_POLL_S = 1.0


def check_server(uri: str, wait_s: float = HEALTH_WAIT_S) -> None:
    """A tracking server answers /health within `wait_s`, or StepError in one line (local stores pass)."""
    import time
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    deadline, reason = time.monotonic() + wait_s, "no answer"
    while True:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_POLL_S * 5) as response:
                if response.status == 200:
                    return
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as e:
            reason = f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            reason = str(getattr(e, "reason", e))
        if time.monotonic() >= deadline:
            raise StepError(f"the MLflow tracking server {redact_uri(uri)} did not answer /health within "
                            f"{wait_s:.0f} s ({reason}): start it, or point tracking.uri (or MLFLOW_TRACKING_URI) "
                            "at one that runs")
        time.sleep(HEALTH_POLL_S)


def _refused(e: Exception) -> bool:
    return any(code in str(e) for code in ("error code 401", "error code 403", "UNAUTHENTICATED",
                                           "PERMISSION_DENIED"))


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the configured store and make sure the experiment exists."""
    import mlflow

    uri = tracking_uri(cfg)
    check_server(uri)
    mlflow.set_tracking_uri(uri)
    try:
        existing = mlflow.get_experiment_by_name(cfg.experiment)
    except mlflow.exceptions.MlflowException as e:
        if _refused(e):
            raise StepError(f"the MLflow tracking server {redact_uri(uri)} refused this client: set "
                            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user it knows "
                            "(on the cluster: keys of the Secret cluster.secrets.mlflow)") from None
        raise
    if existing is None:
        try:
            mlflow.create_experiment(cfg.experiment, artifact_location=_artifact_root(uri, cfg.artifacts))
        except mlflow.exceptions.MlflowException:
            pass  # another process created it first
    experiment = mlflow.set_experiment(cfg.experiment)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        # MLflow 3's UI opens an experiment without this tag in its GenAI overview; this one is a
        # model-training experiment, whose home is the runs table
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return uri


@contextmanager
def run(cfg: TrackingConfig, name: str, tags: dict[str, str] | None = None) -> Iterator[object]:
    """An active MLflow run: the platform's MLFLOW_RUN_ID when set, else a new run named `name`."""
    import mlflow

    configure(cfg)
    run_id = os.environ.get("MLFLOW_RUN_ID")
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, tags=tags) as active:
        yield active


# scheme://user:password@host...: the user-info part of a URI (RFC 3986) ends at the last '@' before the path
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]*@)")


def dvc_experiment() -> dict[str, str] | None:
    """The DVC experiment this process runs in (`dvc exp run` sets these variables), or None."""
    name = os.environ.get("DVC_EXP_NAME")
    if not name:
        return None
    return {"dvc.experiment": name, "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", "")}


def redact_uri(text: str) -> str:
    """Every URI's user-info (credentials) replaced by '***@': what a param or a log may show."""
    return _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)


def flat_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"section.key": value} for mlflow.log_params (values as strings, 500 chars max,
    credentials in URIs redacted)."""
    return {k: redact_uri(str(v))[:500] for k, v in flatten(tree, prefix, leaf=lambda v: True).items()}


def flatten(tree: dict, prefix: str = "", leaf=lambda v: True) -> dict:
    """Nested dict -> {"a.b.c": leaf value}, keeping the leaves `leaf` accepts."""
    out: dict = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + ".", leaf))
        elif leaf(v):
            out[key] = v
    return out


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit the code runs from, or 'unknown' outside a git checkout (e.g. inside a container)."""
    import subprocess

    env_commit = os.environ.get("VIDEOSSL_GIT_COMMIT")
    if env_commit:
        return env_commit
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
