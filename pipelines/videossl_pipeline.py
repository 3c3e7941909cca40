"""The videossl KFP pipeline: ingest -> pretrain -> probe_eval -> register.

Every edge carries a location (a path locally, an s3:// URI on the cluster), never the data itself;
the components are thin wrappers over `videossl.steps`. The DAG is built from the params by one
function, `build_pipeline(cfg, target)`, used by both entry points of `videossl pipeline`:

- `compile_pipeline(cfg, out_path)`: the IR YAML for `kfp run create` / `submit` (deterministic:
  same code and params, same bytes). Images, resources, retries, GPUs, node placement and Secrets
  come from `cluster` in the params.
- `run_local(cfg, root)`: the whole DAG through `kfp.local`'s SubprocessRunner, in this Python
  environment, no Docker (the Kubernetes settings are compiled in but ignored there).

Pipeline parameters (all with defaults from the params the pipeline was built from, so
`kfp run create -f pipeline.yaml` alone reproduces them): `params` (the params every step validates,
as YAML text; the default is one line of JSON, which is YAML, because KFP's compiled header comment
breaks on a multi-line default), `root` (where data and outputs go: cluster.root), `data_version`
(a git revision of the DVC-tracked ingest output to use instead of ingesting; "" = ingest in the run).

Caching, per task. Outputs go to params-addressed folders (`videossl.data.versioning.output_uri`:
`{root}/{layout}/{hash of params text + input locations}`), the same things KFP's cache key is made
of (the params text holds cluster.image too, so new code addresses new folders), so a cache hit
hands back exactly the folder these inputs produce; no run with other params ever writes there.
Hence ingest (deterministic; with a data version, content-addressed), pretrain (the expensive one)
and probe_eval may be served from cache. register never is: it writes to the MLflow registry (a new
version, the champion alias), and a cache hit would report an old version as this run's and skip
the gate against today's champion. A data version is cached by its name: pass a tag or a commit, as
a branch name would keep resolving to the data it named the first time.
"""
# No `from __future__ import annotations` here: KFP reads the pipeline signature's annotations as
# objects, and a string "str" is taken for an artifact type.
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import Markdown, Metrics

from components import make_components
from videossl.cluster.jobs import IMAGE_USER
from videossl.config import TOLERATION_FIELDS, Config, ConfigError
from videossl.errors import StepError

PIPELINE_NAME = "videossl"
PipelineOutputs = NamedTuple("Outputs", [
    ("data_uri", str), ("model_uri", str), ("eval_uri", str), ("register_uri", str), ("model_version", str),
    ("scores", Metrics), ("report", Markdown), ("model_card", Markdown)])

# Which Secret keys each task gets as environment variables (names only: the values stay in the
# cluster). Required keys fail the pod when missing; optional ones (a MinIO endpoint) may be absent.
# The tracking server authenticates every client (k8s/base/mlflow.yaml): its user is required.
S3_KEYS, S3_OPTIONAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_ENDPOINT_URL",)
MLFLOW_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
USES_MLFLOW = {"pretrain", "probe_eval", "register"}  # ingest logs nothing to MLflow
CACHED = {"ingest": True, "pretrain": True, "probe_eval": True, "register": False}  # why: module docstring
RETRY_BACKOFF = {"backoff_duration": "60s", "backoff_factor": 2.0, "backoff_max_duration": "3600s"}
# a toleration's fields (validated in videossl.config) as kfp.kubernetes.add_toleration's arguments
TOLERATION_KEYS = {f: re.sub(r"(?<!^)([A-Z])", r"_\1", f).lower() for f in TOLERATION_FIELDS}


class LocalRunError(StepError):
    """A task of the local run failed (the CLI prints this and exits 1)."""


class SubmitError(StepError):
    """The KFP API refused the run or could not be reached (the CLI prints this and exits 1)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours task names in its messages


def trains_in_pod(cfg: Config) -> bool:
    """launcher none: the pretrain task itself trains (GPUs on its pod); otherwise it only launches
    and waits for the job, whose pods get the GPUs."""
    return cfg.cluster.job.launcher == "none"


def _configure(task: dsl.PipelineTask, step: str, cfg: Config, target: str) -> dsl.PipelineTask:
    cl, job = cfg.cluster, cfg.cluster.job
    res = cl.resources[step]
    cpu, memory = res.cpu, res.memory
    if step == "pretrain" and trains_in_pod(cfg):
        # this pod is the trainer: sized, equipped and placed like one (cluster.job)
        cpu, memory = job.cpu, job.memory
        if job.gpus_per_node:
            task.set_accelerator_type(job.accelerator_type).set_accelerator_limit(job.gpus_per_node)
        for label, value in sorted(job.node_selector.items()):
            kubernetes.add_node_selector(task, label_key=label, label_value=value)
        for tol in job.tolerations:
            kw = {TOLERATION_KEYS[k]: v for k, v in tol.items()}
            if "toleration_seconds" in kw:
                kw["toleration_seconds"] = int(kw["toleration_seconds"])
            kubernetes.add_toleration(task, **kw)
        kubernetes.set_timeout(task, job.timeout_s)  # a hung trainer must not hold its GPUs for ever
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    if res.retries and target == "cluster":
        # Retries are for pods lost to the cluster (eviction, node failure, a storage outage). kfp.local
        # honours them too, but a local failure is bad input or a bug: rerunning it only waits.
        task.set_retry(num_retries=res.retries, **RETRY_BACKOFF)
    task.set_caching_options(CACHED[step])

    # The images' numeric non-root user. The KFP backend adds the rest of the restricted profile
    # (no privilege escalation, all capabilities dropped, RuntimeDefault seccomp); the SDK has no
    # read-only root filesystem, and the KFP launcher writes into the container's own filesystem.
    kubernetes.set_security_context(task, run_as_user=IMAGE_USER, run_as_group=IMAGE_USER, run_as_non_root=True)
    kubernetes.use_secret_as_env(task, secret_name=cl.secrets.s3, secret_key_to_env={k: k for k in S3_KEYS})
    kubernetes.use_secret_as_env(task, secret_name=cl.secrets.s3, secret_key_to_env={k: k for k in S3_OPTIONAL_KEYS},
                                 optional=True)
    if step in USES_MLFLOW:
        kubernetes.use_secret_as_env(task, secret_name=cl.secrets.mlflow,
                                     secret_key_to_env={k: k for k in MLFLOW_KEYS})
    return task


def build_pipeline(cfg: Config, target: str = "cluster"):
    """The @dsl.pipeline for these params. `target` "cluster": the pretrain task trains or launches
    the job as cluster.job.launcher says; "local" (kfp.local): it always trains in-process."""
    if target not in ("cluster", "local"):
        raise ValueError(f"target must be 'cluster' or 'local', got {target!r}")
    comps = make_components(cfg.cluster.image)
    launcher = cfg.cluster.job.launcher if target == "cluster" else "local"

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Raw video -> clip shards -> video-native SSL encoder (+ bag-of-frames baseline) "
                              "-> temporal benchmark -> MLflow registry (champion/challenger gate).")
    def videossl_pipeline(params: str = params_text(cfg), root: str = cfg.cluster.root,
                          data_version: str = cfg.cluster.data_version or "") -> PipelineOutputs:
        data = _configure(comps["ingest"](params=params, root=root, data_version=data_version), "ingest", cfg, target)
        data_uri = data.outputs["data_uri"]
        model = _configure(comps["pretrain"](params=params, data_uri=data_uri, root=root, launcher=launcher),
                           "pretrain", cfg, target)
        model_uri = model.outputs["model_uri"]
        scores = _configure(comps["probe_eval"](params=params, data_uri=data_uri, model_uri=model_uri, root=root),
                            "probe_eval", cfg, target)
        reg = _configure(comps["register"](params=params, data_uri=data_uri, model_uri=model_uri,
                                           eval_uri=scores.outputs["eval_uri"], root=root), "register", cfg, target)
        return PipelineOutputs(
            data_uri=data_uri, model_uri=model_uri, eval_uri=scores.outputs["eval_uri"],
            register_uri=reg.outputs["register_uri"], model_version=reg.outputs["model_version"],
            scores=scores.outputs["scores"], report=scores.outputs["report"], model_card=reg.outputs["model_card"])

    return videossl_pipeline


def params_text(cfg: Config) -> str:
    """The params as one line of JSON (valid YAML, so parse_config reads it): the pipeline's default
    and what submit and run_local pass, so all three address outputs alike."""
    return json.dumps(cfg.model_dump(mode="json"))


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

    from videossl.storage import is_s3, staged

    if is_s3(root):
        root_str = str(root).rstrip("/")
        kfp_dir = Path(kfp_root or tempfile.mkdtemp(prefix="videossl-kfp-root-"))
    else:
        root_abs = Path(root).resolve()
        root_abs.mkdir(parents=True, exist_ok=True)
        root_str, kfp_dir = str(root_abs), Path(kfp_root or root_abs / "kfp-root")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(kfp_dir))
    with _videossl_importable_in_tasks(), warnings.catch_warnings():
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
    outputs = {"ingest": "data_uri", "pretrain": "model_uri", "probe_eval": "eval_uri", "register": "register_uri"}
    loc = {step: out[key] for step, key in outputs.items()}
    with staged([loc["register"]]) as ([reg_dir], _):
        reg = json.loads((reg_dir / "registration.json").read_text())
    headline = {"video", "frames", "random_init", "pixels", "chance"}
    return {
        "root": root_str,
        "locations": loc,
        # the Metrics output (what the KFP UI shows); the full table is in locations.probe_eval/metrics.json
        "scores": {k: v for k, v in sorted(out["scores"].metadata.items()) if k.rsplit(".", 1)[-1] in headline},
        "registered": {"model_version": out["model_version"],
                       **{k: reg.get(k) for k in ("model_name", "version", "aliases", "promoted", "reason",
                                                  "model_uri", "dataset_digest")}},
        "kfp_outputs": {name: out[name].uri for name in ("scores", "report", "model_card")},
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
