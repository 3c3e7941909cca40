"""MLflow tracking: one place that points MLflow at the configured store and opens runs.

Only rank 0 logs (every rank would otherwise make its own run). When the platform hands us a run
(`MLFLOW_RUN_ID`, as KFP or a TrainJob may), we log into it instead of starting another.

Every run a step opens is traceable: it carries the git commit and, inside `dvc exp run`, the DVC
experiment and its baseline revision; it logs the dataset it read as its input (`mlflow.log_input`,
named by the dataset digest); it starts when the step's work started, so its duration is the step's.
The steps of one pipeline execution are children of one parent run: an execution is named by
$VIDEOSSL_PIPELINE_RUN (`make run` and `videossl pipeline run-local` set it) or, inside `dvc exp run`,
by the experiment's name; the first step to log creates the parent and every step extends its span.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from videossl import local_store, secrets
from videossl.config import TrackingConfig
from videossl.errors import StepError


def absolute_store(uri: str) -> str:
    # A relative sqlite path would land wherever the process happens to run (KFP, torchrun): pin it.
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def reader_uri(uri: str) -> str:
    """A store named by a user or a record, ready to read: a relative sqlite path pinned to the working
    folder, its artifact paths rebased when the project was copied or moved (videossl.local_store)."""
    uri = absolute_store(uri)
    local_store.relocate(uri)
    return uri


def _artifact_root(uri: str, artifacts: str | None) -> str | None:
    """Where a new experiment keeps artifacts. Against a tracking server, the server decides (it
    proxies artifacts to its own store) unless params name a URI; local stores get a local folder."""
    if artifacts and ":/" in artifacts:
        return artifacts  # s3://..., mlflow-artifacts:/..., file:///...
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return Path(artifacts or "mlartifacts").resolve().as_uri()


def portable_uri(uri: str) -> str:
    """`uri` as a record that stays true in a copy of the project: a sqlite store inside the working
    folder relative to it (what params name), any other store as it is."""
    db = local_store.sqlite_file(uri)
    if db is not None and db.is_relative_to(Path.cwd().resolve()):
        return local_store.SQLITE + db.relative_to(Path.cwd().resolve()).as_posix()
    return uri


def tracking_uri(cfg: TrackingConfig) -> str:
    """The store named in params; `tracking.uri: null` means the platform's MLFLOW_TRACKING_URI.

    Params win over the environment on purpose: mlflow.set_tracking_uri exports the variable to every
    child process, so an inherited value is not a reliable statement of where this run should log."""
    if cfg.uri:
        return absolute_store(cfg.uri)
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
    local_store.relocate(uri)  # a copied or moved checkout uses its own artifacts, never the original's
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
    root = local_store.root_of(uri)
    if root and experiment.tags.get(local_store.ROOT_TAG) != root:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, local_store.ROOT_TAG, root)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        # MLflow 3's UI opens an experiment without this tag in its GenAI overview; this one is a
        # model-training experiment, whose home is the runs table
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return uri


PIPELINE_RUN_ENV = "VIDEOSSL_PIPELINE_RUN"  # names one pipeline execution: its steps share a parent run
PIPELINE_RUN_TAG = "videossl.pipeline_run"
ROLE_TAG = "videossl.role"  # "pipeline" on the parent run of an execution
DATASET_NAME = "videossl-clips"


def pipeline_run() -> str | None:
    """The execution this step belongs to: $VIDEOSSL_PIPELINE_RUN, else the DVC experiment, else none."""
    explicit = os.environ.get(PIPELINE_RUN_ENV)
    if explicit:
        return explicit
    experiment = os.environ.get("DVC_EXP_NAME")
    return f"dvc-exp-{experiment}" if experiment else None


def _parent(client, experiment_id: str, execution: str, started_ms: int) -> str:
    """The parent run of `execution`, created by the first step that logs (steps run one after another)."""
    found = client.search_runs([experiment_id], max_results=1,
                               filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{execution}' and tags.`{ROLE_TAG}` = 'pipeline'")
    if found:
        return found[0].info.run_id
    parent = client.create_run(experiment_id, start_time=started_ms, run_name=f"pipeline {execution}",
                               tags={PIPELINE_RUN_TAG: execution, ROLE_TAG: "pipeline", "git_commit": git_commit()})
    return parent.info.run_id


def _extend_parent(client, parent_id: str | None) -> None:
    """The parent spans its steps: it ends when the latest step ended."""
    if parent_id:
        client.set_terminated(parent_id, "FINISHED")


@contextmanager
def run(cfg: TrackingConfig, name: str, tags: dict[str, str] | None = None, *, started: float | None = None,
        dataset: tuple[str, str] | None = None) -> Iterator[object]:
    """An active MLflow run: the platform's MLFLOW_RUN_ID when set, else a new run named `name`.

    `started`: time.time() when the step's work began (default: now). `dataset`: (location, digest)
    of the dataset the step reads, logged as the run's input."""
    import time

    import mlflow
    from mlflow.entities import RunTag

    configure(cfg)
    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(cfg.experiment).experiment_id
    run_id, parent_id = os.environ.get("MLFLOW_RUN_ID"), None
    if run_id is None:
        started_ms = int((started or time.time()) * 1000)
        execution = pipeline_run()
        parent_id = _parent(client, experiment_id, execution, started_ms) if execution else None
        trace = {"git_commit": git_commit(), **(dvc_experiment() or {}),
                 **({PIPELINE_RUN_TAG: execution, "mlflow.parentRunId": parent_id} if parent_id else {})}
        run_id = client.create_run(experiment_id, start_time=started_ms, run_name=name,
                                   tags={**trace, **(tags or {})}).info.run_id
    elif tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    status, signals = "FAILED", []
    try:
        with terminated_raises() as signals, mlflow.start_run(run_id=run_id) as active:
            if dataset is not None:
                log_dataset(*dataset)
            yield active
            if signals:  # a library swallowed the interrupt and the step went on: it was stopped all the same
                raise Terminated(f"signal {signals[0]} arrived while the step ran")
        status = "FINISHED"
    except BaseException as e:
        # stopped, whatever the exception that reached here: a signal inside a library call can come back
        # as that library's own error (an interrupted store write), not as the interrupt itself
        status = "KILLED" if signals or isinstance(e, (KeyboardInterrupt, Terminated)) else "FAILED"
        raise
    finally:
        # The run's last word is ours, whatever MLflow's own exit managed: a Ctrl-C inside a logging call
        # left it RUNNING (MLflow had dropped the run before its status write failed on a busy store)
        _set_status(client, run_id, status)
        _extend_parent(client, parent_id)


class Terminated(BaseException):
    """SIGTERM (what Kubernetes and `timeout` send) as an exception: the step unwinds, its run ends KILLED."""


@contextmanager
def terminated_raises() -> Iterator[list[int]]:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt in the main thread while inside (SIGTERM's
    default action kills the process on the spot, its MLflow run RUNNING for ever). Yields the signals
    received: a library that catches the exception (seen once in 30 runs: a Ctrl-C inside a logging call
    that the step survived) cannot hide that the step was stopped. Elsewhere (a worker thread) nothing
    changes."""
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated(f"signal {signum}")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _set_status(client, run_id: str, status: str, attempts: int = 20) -> None:
    """set_terminated, retried while a sqlite store is locked by another writer (a Ctrl-C can land there)."""
    import time

    for attempt in range(attempts):
        try:
            client.set_terminated(run_id, status)
            return
        except Exception:  # noqa: BLE001 - the store's errors (locked database, a server hiccup) all retry
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def log_dataset(location: str, digest: str, context: str = "input") -> None:
    """Log the clip dataset at `location` (a folder or s3:// URI) as the active run's input."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source = location if "://" in str(location) else Path(location).resolve().as_uri()
    # MLflow keeps a short digest (a 36-character column); the full one goes in the input's tags
    with warnings.catch_warnings():  # file:// URIs match MLflow's local source twice; it says so, harmlessly
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        resolved = resolve_dataset_source(source)
    ds = MetaDataset(resolved, name=DATASET_NAME, digest=digest[:12])
    mlflow.log_input(ds, context=context, tags={"dataset_digest": digest})


def dvc_experiment() -> dict[str, str] | None:
    """The DVC experiment this process runs in (`dvc exp run` sets these variables), or None."""
    name = os.environ.get("DVC_EXP_NAME")
    if not name:
        return None
    return {"dvc.experiment": name, "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", "")}


redact_uri = secrets.redact  # what a param or a log may show of a URL


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
