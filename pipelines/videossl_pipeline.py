"""The videossl KFP pipeline: split_params -> ingest -> (pretrain, ceiling) -> probe_eval -> register.

Datasets and models travel as `dsl.Dataset` / `dsl.Model` artifacts that point at their folders (a
path locally, an s3:// URI on the cluster; `videossl.artifact_locations`), never the data itself, so
the UI shows lineage; the components are thin wrappers over `videossl.steps`. This file holds the DAG
only, built from the params by one function, `build_pipeline(cfg, target)`; compiling, running it
locally (kfp.local) and submitting it to a cluster are `videossl.pipeline_runs`, behind
`videossl pipeline compile|run-local|submit`. Images, resources, retries, GPUs, node placement and
Secrets come from `cluster` in the params.

Pipeline parameters (all with defaults from the params the pipeline was built from, so
`kfp run create -f pipeline.yaml` alone reproduces them): `params` (the whole params as YAML text;
the default is one line of JSON, which is YAML, because KFP's compiled header comment breaks on a
multi-line default), `root` (where data and outputs go: cluster.root), `data_version` (a git
revision of the DVC-tracked ingest output to use instead of ingesting; "" = ingest in the run).

Caching, per task, as `dvc repro` scopes it. The first task validates the whole params and hands
each step only the sections it reads (`videossl.step_params`, from `videossl.stages.STAGES`), so a
task's cache key depends on its own share of the params and on its inputs: a register-only change
reruns register alone. Outputs go to folders addressed the same way
(`videossl.data.versioning.output_uri`: `{root}/{layout}/{hash of the share + image + input
locations}`; the image is compiled into every task, so new code addresses new folders), so a cache hit
hands back exactly the folder these inputs produce; no run with other params ever writes there.
Hence ingest (deterministic; with a data version, content-addressed), pretrain (the expensive one),
ceiling and probe_eval may be served from cache. register never is: it writes to the MLflow registry (a new
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
from kfp.dsl import Dataset, Markdown, Metrics, Model

from components import MERGE, PARTITION, PLAN, SPLIT, make_components
from videossl.cluster.jobs import IMAGE_USER
from videossl.config import TOLERATION_FIELDS, Config
from videossl.tracking import PIPELINE_RUN_ENV

PIPELINE_NAME = "videossl"
PipelineOutputs = NamedTuple("Outputs", [
    ("data", Dataset), ("model", Model), ("ceiling_uri", str), ("eval_uri", str), ("register_uri", str),
    ("model_version", str),
    ("scores", Metrics), ("report", Markdown), ("model_card", Markdown)])

# Which Secret keys each task gets as environment variables (names only: the values stay in the
# cluster). Required keys fail the pod when missing; optional ones (a MinIO endpoint) may be absent.
# The tracking server authenticates every client (k8s/base/mlflow.yaml): its user is required.
S3_KEYS, S3_OPTIONAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_ENDPOINT_URL",)
MLFLOW_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
USES_MLFLOW = {"pretrain", "probe_eval", "register"}  # ingest logs nothing to MLflow
CACHED = {SPLIT: True, "ingest": True, PLAN: True, PARTITION: True, MERGE: True, "pretrain": True, "ceiling": True, "probe_eval": True, "register": False}  # why: module docstring
# The MLflow runs of one pipeline execution are children of one parent run (videossl.tracking), named
# by this environment variable: on the cluster, the Argo workflow's name, a label of every pod of the
# run, read through the Downward API (environment, not a task input, so it is in no cache key).
RUN_LABEL = "workflows.argoproj.io/workflow"
RETRY_BACKOFF = {"backoff_duration": "60s", "backoff_factor": 2.0, "backoff_max_duration": "3600s"}
# a toleration's fields (validated in videossl.config) as kfp.kubernetes.add_toleration's arguments
TOLERATION_KEYS = {f: re.sub(r"(?<!^)([A-Z])", r"_\1", f).lower() for f in TOLERATION_FIELDS}


def trains_in_pod(cfg: Config) -> bool:
    """launcher none: the pretrain task itself trains (GPUs on its pod); otherwise it only launches
    and waits for the job, whose pods get the GPUs."""
    return cfg.cluster.job.launcher == "none"


def _configure(task: dsl.PipelineTask, step: str, cfg: Config, target: str, name: str | None = None) -> dsl.PipelineTask:
    """`task` sized, retried, cached, secured and given its credentials as `step` is; `name`: the
    component when it is not the step's own (a partitioned ingest's tasks are the ingest step)."""
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
    task.set_caching_options(CACHED[name or step])

    # The images' numeric non-root user. The KFP backend adds the rest of the restricted profile
    # (no privilege escalation, all capabilities dropped, RuntimeDefault seccomp); the SDK has no
    # read-only root filesystem, and the KFP launcher writes into the container's own filesystem.
    kubernetes.set_security_context(task, run_as_user=IMAGE_USER, run_as_group=IMAGE_USER, run_as_non_root=True)
    if step == SPLIT:  # reads nothing but its input: no credentials
        return task
    s3 = cl.secrets.s3_for(step)  # a step's own key where cluster.secrets.s3_steps names one
    kubernetes.use_secret_as_env(task, secret_name=s3, secret_key_to_env={k: k for k in S3_KEYS})
    kubernetes.use_secret_as_env(task, secret_name=s3, secret_key_to_env={k: k for k in S3_OPTIONAL_KEYS}, optional=True)
    if step in USES_MLFLOW:  # the registry is written by register alone, with its own login
        login = cl.secrets.mlflow_register if step == "register" else cl.secrets.mlflow
        kubernetes.use_secret_as_env(task, secret_name=login, secret_key_to_env={k: k for k in MLFLOW_KEYS})
        kubernetes.use_field_path_as_env(task, env_name=PIPELINE_RUN_ENV, field_path=f"metadata.labels['{RUN_LABEL}']")
    return task


def _ingest(comps: dict, params, root, data_version, image: str, cfg: Config, target: str):
    """The dataset: one ingest task, or (cluster.ingest_partitions > 1) that many partition tasks side by
    side and a merge, which writes the same dataset at the same address. A data version is one task."""
    count = cfg.cluster.ingest_partitions
    if count == 1 or cfg.cluster.data_version:
        task = comps["ingest"](params=params, root=root, data_version=data_version, image=image)
        return _configure(task, "ingest", cfg, target).outputs["data"]
    plan = _configure(comps[PLAN](params=params, count=count), SPLIT, cfg, target, PLAN)
    with dsl.ParallelFor(items=plan.output, parallelism=count) as partition:
        part = _configure(comps[PARTITION](partition=partition, root=root, image=image), "ingest", cfg, target,
                          PARTITION)
    merged = comps[MERGE](params=params, root=root, image=image, parts=dsl.Collected(part.output))
    return _configure(merged, "ingest", cfg, target, MERGE).outputs["data"]


def build_pipeline(cfg: Config, target: str = "cluster"):
    """The @dsl.pipeline for these params. `target` "cluster": the pretrain task trains or launches
    the job as cluster.job.launcher says; "local" (kfp.local): it always trains in-process."""
    if target not in ("cluster", "local"):
        raise ValueError(f"target must be 'cluster' or 'local', got {target!r}")
    comps = make_components(cfg.cluster.image)
    launcher = cfg.cluster.job.launcher if target == "cluster" else "local"
    image = cfg.cluster.image

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Raw video -> clip shards -> video-native SSL encoder (+ bag-of-frames baseline) "
                              "-> temporal benchmark -> MLflow registry (champion/challenger gate).")
    def videossl_pipeline(params: str = params_text(cfg), root: str = cfg.cluster.root,
                          data_version: str = cfg.cluster.data_version or "") -> PipelineOutputs:
        """videossl: split_params -> ingest -> (pretrain, ceiling side by side) -> probe_eval -> register.

        Args:
            params: The params, as one line of JSON (valid YAML); the default is the params the pipeline was
                compiled from. Validated whole by the first task, which hands each step only its sections.
            root: Where the run's data and outputs go (an s3:// URI); each step writes a params-addressed folder.
            data_version: A git revision of the DVC-tracked ingest output to train on instead of ingesting;
                "" = ingest in the run.
        """
        share = _configure(comps[SPLIT](params=params), SPLIT, cfg, target).outputs
        data = _ingest(comps, share["ingest"], root, data_version, image, cfg, target)
        pretrain = _configure(comps["pretrain"](params=share["pretrain"], data=data, root=root, launcher=launcher,
                                                image=image), "pretrain", cfg, target)
        model = pretrain.outputs["model"]
        # the ceiling needs the data only: it trains while pretraining does
        ceiling = _configure(comps["ceiling"](params=share["ceiling"], data=data, root=root, image=image), "ceiling",
                             cfg, target)
        scores = _configure(comps["probe_eval"](params=share["probe_eval"], data=data, model=model,
                                                ceiling_uri=ceiling.outputs["ceiling_uri"], root=root, image=image),
                            "probe_eval", cfg, target)
        reg = _configure(comps["register"](params=share["register"], data=data, model=model,
                                           eval_uri=scores.outputs["eval_uri"], root=root, image=image),
                         "register", cfg, target)
        return PipelineOutputs(
            data=data, model=model, ceiling_uri=ceiling.outputs["ceiling_uri"], eval_uri=scores.outputs["eval_uri"],
            register_uri=reg.outputs["register_uri"], model_version=reg.outputs["model_version"],
            scores=scores.outputs["scores"], report=scores.outputs["report"], model_card=reg.outputs["model_card"])

    return videossl_pipeline


def params_text(cfg: Config) -> str:
    """The params as one line of JSON (valid YAML, so parse_config reads it): the pipeline's default
    and what submit and run_local pass, so all three address outputs alike."""
    return json.dumps(cfg.model_dump(mode="json"))
