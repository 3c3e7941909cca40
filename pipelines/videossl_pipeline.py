"""The videossl KFP pipeline: ingest -> pretrain -> probe_eval -> register.

Every edge carries a location (a path locally, an s3:// URI on the cluster), never the data itself;
the components are thin wrappers over `videossl.steps`. This file holds the DAG only, built from the
params by one function, `build_pipeline(cfg, target)`; compiling, running it locally (kfp.local) and
submitting it to a cluster are `videossl.pipeline_runs`, behind `videossl pipeline compile|run-local|submit`.
Images, resources, retries, GPUs, node placement and Secrets come from `cluster` in the params.

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
import json
import re
from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Markdown, Metrics

from components import make_components
from videossl.cluster.jobs import IMAGE_USER
from videossl.config import TOLERATION_FIELDS, Config

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
        """videossl: ingest -> pretrain -> probe_eval -> register.

        Args:
            params: The params every step validates, as one line of JSON (valid YAML); the default is the
                params the pipeline was compiled from.
            root: Where the run's data and outputs go (an s3:// URI); each step writes a params-addressed folder.
            data_version: A git revision of the DVC-tracked ingest output to train on instead of ingesting;
                "" = ingest in the run.
        """
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
