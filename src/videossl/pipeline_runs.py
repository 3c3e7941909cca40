"""Compile the KFP pipeline (pipelines/videossl_pipeline.py), run it locally, submit it to a cluster.

- `compile_pipeline(cfg, out_path)`: the IR YAML for `kfp run create` / `submit` (deterministic:
  same code and params, same bytes).
- `run_local(cfg, root)`: the whole DAG through `kfp.local`'s SubprocessRunner, in this Python
  environment, no Docker (the Kubernetes settings are compiled in but ignored there).
- `submit(cfg)`: compile for these params and create a run on the KFP API, after `cluster_problems`
  finds nothing that would lose results in a pod.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from kfp import compiler

from pipelines.videossl_pipeline import build_pipeline, params_text
from videossl.config import Config, ConfigError
from videossl.errors import StepError
from videossl.stages import REGISTRATION


class LocalRunError(StepError):
    """A task of the local run failed (the CLI prints this and exits 1)."""


class SubmitError(StepError):
    """The KFP API refused the run or could not be reached (the CLI prints this and exits 1)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours task names in its messages


def cluster_problems(cfg: Config) -> list[str]:
    """Params that work on one machine but lose results in a pod (its disk goes with it)."""
    problems = []
    uri = cfg.tracking.uri
    if uri is not None and not uri.startswith(("http://", "https://", "databricks")):
        problems.append(f"tracking.uri is {uri!r}, a store inside the pod that is lost with it: set it to null "
                        f"(the {cfg.cluster.secrets.mlflow} Secret's MLFLOW_TRACKING_URI) or an http(s) server")
    art = cfg.tracking.artifacts
    if art is not None and "://" not in art:
        problems.append(f"tracking.artifacts is {art!r}, a folder inside the pod: set it to null (the tracking "
                        f"server proxies artifacts) or an s3:// URI")
    if cfg.cluster.data_version and not cfg.cluster.data_repo:
        problems.append(f"cluster.data_version is {cfg.cluster.data_version!r} but cluster.data_repo is not set: "
                        f"pods resolve the version in that git repository (URL)")
    if not cfg.cluster.root.startswith("s3://"):
        problems.append(f"cluster.root is {cfg.cluster.root!r}: pods share no disk, it must be an s3:// URI")
    return problems


def compile_pipeline(cfg: Config, out_path: str | os.PathLike) -> str:
    """Write the pipeline's IR YAML for these params to `out_path`; returns the path."""
    out = Path(out_path)
    if out.parent != Path("."):
        out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=build_pipeline(cfg, "cluster"), package_path=str(out))
    return str(out)


def run_local(cfg: Config, root: str | os.PathLike, kfp_root: str | os.PathLike | None = None) -> dict:
    """Run the whole DAG with kfp.local's SubprocessRunner in this interpreter's environment.

    Every task runs as `sys.executable -m kfp.dsl.executor_main ...` with this process's environment,
    so the venv's `videossl` is importable there (and in torchrun, which the pretrain step launches
    as `sys.executable -m torch.distributed.run`). kfp.local's cache is off: every task runs.
    `root` may be a folder or an s3:// URI (then the tasks stage their data through S3 as on the
    cluster); KFP's own small artifacts go to `kfp_root` (default: root/kfp-root, or a temporary
    folder for an s3:// root). Returns the output locations, the headline scores and the registered version.
    """
    from kfp import local

    from videossl.artifact_locations import location
    from videossl.storage import is_s3, staged

    if is_s3(root):
        root_str = str(root).rstrip("/")
        kfp_dir = Path(kfp_root or tempfile.mkdtemp(prefix="videossl-kfp-root-"))
    else:
        root_abs = Path(root).resolve()
        root_abs.mkdir(parents=True, exist_ok=True)
        root_str, kfp_dir = str(root_abs), Path(kfp_root or root_abs / "kfp-root")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(kfp_dir))
    with _videossl_importable_in_tasks(), _one_pipeline_run(), _readable_task_logs(), warnings.catch_warnings():
        # Locally, the image, resources and Kubernetes settings are ignored; kfp.local warns per task.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*is not supported by the local runner.*")
        try:
            run = build_pipeline(cfg, "local")(params=params_text(cfg), root=root_str, data_version="")
        except RuntimeError as e:  # kfp.local: "Pipeline 'videossl' finished with status FAILURE. Inner task ..."
            raise LocalRunError(f"{_ANSI.sub('', str(e))} The failed task's log is above; outputs so far are "
                                f"under {root_str}.") from e

    out = run.outputs
    loc = {"ingest": location(out["data"]), "pretrain": location(out["model"]), "ceiling": out["ceiling_uri"],
           "probe_eval": out["eval_uri"], "register": out["register_uri"]}
    with staged([loc["register"]]) as ([reg_dir], _):
        reg = json.loads((reg_dir / REGISTRATION).read_text())
    headline = {"video", "frames", "random_init", "pixels", "chance"}
    return {
        "root": root_str,
        "locations": loc,
        # the Metrics output (what the KFP UI shows); the full table is in locations.probe_eval/metrics.json
        "scores": {k: v for k, v in sorted(out["scores"].metadata.items()) if k.rsplit(".", 1)[-1] in headline},
        "registered": {"model_version": out["model_version"],
                       **{k: reg.get(k) for k in ("model_name", "version", "aliases", "promoted", "reason",
                                                  "model_uri", "dataset_digest")}},
        "kfp_outputs": {name: out[name].uri for name in ("data", "model", "scores", "report", "model_card")},
    }


# ----------------------------------------------------------------------------------------------
# submit


def submission(cfg: Config, host: str | None = None, run_name: str | None = None) -> dict:
    """What `submit` sends: endpoint, experiment, run name, service account and the pipeline
    parameters (the validated params text, the root, the data version)."""
    import hashlib

    params = params_text(cfg)
    digest = hashlib.sha256(params.encode()).hexdigest()
    host = host or cfg.cluster.kfp_host or os.environ.get("KFP_HOST")
    return {
        "host": host.rstrip("/") if host else None,
        "experiment": cfg.cluster.experiment,
        "run_name": run_name or f"videossl {digest[:8]} {cfg.cluster.data_version or 'ingest'}",
        "service_account": cfg.cluster.service_account,
        "namespace": cfg.cluster.namespace,
        "arguments": {"params": params, "root": cfg.cluster.root, "data_version": cfg.cluster.data_version or ""},
        "params_sha256": digest,
    }


def submit(cfg: Config, host: str | None = None, run_name: str | None = None, package: str | None = None,
           dry_run: bool = False) -> dict:
    """Compile for these params and create a run on the KFP endpoint (`host`, else cluster.kfp_host,
    else $KFP_HOST). `package`: also keep the compiled YAML there. Returns run id and URL (or, with
    `dry_run`, what would be sent, without contacting anything)."""
    problems = cluster_problems(cfg)
    if problems:
        raise ConfigError("these params cannot run on the cluster:\n  " + "\n  ".join(problems))
    sub = submission(cfg, host, run_name)
    if not sub["host"] and not dry_run:
        raise ConfigError("no KFP endpoint: set cluster.kfp_host (or -S cluster.kfp_host=URL, or $KFP_HOST)")
    with tempfile.TemporaryDirectory(prefix="videossl-submit-") as tmp:
        path = compile_pipeline(cfg, package or Path(tmp) / "pipeline.yaml")
        if dry_run:
            return {**{k: v for k, v in sub.items() if k != "arguments"},
                    "package": path if package else "(temporary)",
                    "arguments": {**sub["arguments"], "params": f"<the params as JSON, sha256 {sub['params_sha256']}>"},
                    "dry_run": True}
        import kfp

        # kfp.Client prints its links to stdout; ours is the JSON the CLI prints
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This client only works with", category=FutureWarning)
            try:
                client = kfp.Client(host=sub["host"])
                # Multi-user KFP keeps experiments and runs in the profile namespace; single-user has none.
                namespace = sub["namespace"] if client.get_kfp_healthz().multi_user else None
                result = client.create_run_from_pipeline_package(
                    path, arguments=sub["arguments"], run_name=sub["run_name"], experiment_name=sub["experiment"],
                    namespace=namespace, service_account=sub["service_account"])
            except Exception as e:  # kfp_server_api.ApiException, urllib3 connection errors, ...
                raise SubmitError(f"submitting to the KFP API at {sub['host']} failed: {type(e).__name__}: "
                                  f"{str(e).strip()[:2000]}") from e
    return {"run_id": result.run_id, "url": f"{sub['host']}/#/runs/details/{result.run_id}",
            "experiment": sub["experiment"], "run_name": sub["run_name"], "params_sha256": sub["params_sha256"]}


class _TaskLogFilter:
    """sys.stdout while kfp.local runs: each task's executor logs its whole executor input (every
    parameter, the params text included, as indented JSON: hundreds of lines per task) before the
    step's own output, and kfp.local logs each output value on one line (split-params' shares of the
    params: kilobytes each). This keeps one line for the first and cuts the second at LINE_LIMIT
    characters (the values are in the task's outputs); everything else passes through."""

    MARK = "Got executor_input:"
    LINE_LIMIT = 1000

    def __init__(self, stream):
        self.stream, self.pending = stream, ""
        self.closing: str | None = None  # while skipping the JSON: the line that ends it

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if self.closing is not None:
            if line.rstrip() == self.closing:
                self.closing = None
        elif self.MARK in line:
            # json.dumps(indent=4) closes the object at the log line's own indent (kfp.local indents
            # a task's streamed log)
            self.closing = line[:len(line) - len(line.lstrip())] + "}"
            self.stream.write(line.split(self.MARK)[0] + "Got executor_input (not shown: the task's "
                              "parameters and artifact URIs)\n")
        elif len(line) > self.LINE_LIMIT:
            self.stream.write(f"{line[:self.LINE_LIMIT]}... ({len(line)} characters)\n")
        else:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        if self.pending and self.closing is None:
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the wrapped stream's
        return getattr(self.stream, name)


@contextlib.contextmanager
def _readable_task_logs():
    """kfp.local prints each task's output to sys.stdout line by line: filter it for the run."""
    original = sys.stdout
    sys.stdout = _TaskLogFilter(original)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = original


@contextlib.contextmanager
def _one_pipeline_run():
    """The tasks inherit this process's environment: name this execution, so their MLflow runs are
    children of one parent run (videossl.tracking)."""
    import uuid

    from videossl.tracking import PIPELINE_RUN_ENV

    if os.environ.get(PIPELINE_RUN_ENV):
        yield
        return
    os.environ[PIPELINE_RUN_ENV] = f"kfp-local-{uuid.uuid4().hex[:12]}"
    try:
        yield
    finally:
        os.environ.pop(PIPELINE_RUN_ENV, None)


@contextlib.contextmanager
def _videossl_importable_in_tasks():
    """Tasks run with sys.executable and this process's environment. An installed (or editable)
    videossl is found there already; when this process found it another way (sys.path edits), put
    its folder on PYTHONPATH for the duration of the run."""
    probe = [sys.executable, "-c",
             "import importlib.util, sys; sys.exit(importlib.util.find_spec('videossl') is None)"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        yield
        return
    import videossl

    where = str(Path(videossl.__file__).resolve().parent.parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([where, *filter(None, (old or "").split(os.pathsep))])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
