"""Render the multi-node pretraining job (a Kubeflow Trainer TrainJob or a Training Operator
PyTorchJob) from its YAML template and params.yaml's `cluster` section.

Rendering loads the template (templates/, also shown under k8s/jobs/) and sets fields, so it can
only produce valid YAML; the same inputs give the same bytes, and the job's name is a hash of the
rendered job, so a retried KFP task finds the job its first attempt submitted.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from importlib import resources

import yaml

from videossl import storage
from videossl.train.batching import objectives_of, split_batch
from videossl.config import Config, dump_config
from videossl.errors import StepError

NAME_PREFIX = "videossl-pretrain"
PARAMS_ENV = "VIDEOSSL_PARAMS"  # the params text, read by videossl.cluster.worker in every pod
INSTANCE_LABEL = "app.kubernetes.io/instance"  # the job's name on its pods: the log/pod selector
# A pod's environment is also an exec() argument: Linux caps one "NAME=value" string at 128 KiB.
MAX_PARAMS_BYTES = 64 * 1024

# The keys of each Secret the pods read (cluster.secrets). A PyTorchJob takes whole Secrets
# (envFrom); a TrainJob has no envFrom, so it names each key, optional where the trainer can do
# without it (a missing required key keeps the pod from starting, which the launcher reports).
SECRET_KEYS = {
    "s3": {"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False, "AWS_ENDPOINT_URL": True,
           "AWS_DEFAULT_REGION": True},
    # the tracking server authenticates every client (k8s/base/mlflow.yaml); rank 0 logs to it
    "mlflow": {"MLFLOW_TRACKING_URI": True, "MLFLOW_TRACKING_USERNAME": False, "MLFLOW_TRACKING_PASSWORD": False},
}


class ClusterJobError(StepError):
    """The cluster job could not be rendered, submitted or run; the message says why."""


@dataclass(frozen=True)
class JobKind:
    """What the launcher needs to know about one kind of job."""
    kind: str
    group: str
    version: str
    plural: str
    template: str
    done: str        # the condition type that means success (both kinds use "Failed" for failure)
    container: str   # the trainer container's name in each pod

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


KINDS = {
    "trainjob": JobKind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", "trainjob.yaml",
                        done="Complete", container="node"),
    "pytorchjob": JobKind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs", "pytorchjob.yaml",
                          done="Succeeded", container="pytorch"),
}


POD_METRICS_HOST = "0.0.0.0"  # every interface of the pod
# The numeric non-root user of both images (containers/Dockerfile.*): the pods' runAsUser/runAsGroup.
IMAGE_USER = 1000


def job_kind(cfg: Config) -> JobKind:
    launcher = cfg.cluster.job.launcher
    if launcher not in KINDS:
        raise ClusterJobError(f"cluster.job.launcher is {launcher!r}: no cluster job to submit (pretraining runs "
                              f"inside the KFP pod); set it to one of {sorted(KINDS)}")
    return KINDS[launcher]


def load_template(kind: JobKind) -> dict:
    text = resources.files("videossl.cluster").joinpath("templates", kind.template).read_text()
    return yaml.safe_load(text)


def render_job(cfg: Config, data_uri: str, out_uri: str) -> dict:
    """The job manifest (a dict, ready for the API) that pretrains on `data_uri` and writes
    encoder.pt and frame_encoder.pt to `out_uri`, both s3:// URIs the pods can reach."""
    kind = job_kind(cfg)
    _check(cfg, data_uri, out_uri)
    # In a pod, /metrics must answer the cluster's Prometheus on the pod IP; on a workstation it
    # stays on loopback (pretrain.metrics_host's default).
    cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"metrics_host": POD_METRICS_HOST})})
    job = load_template(kind)
    job["metadata"]["namespace"] = cfg.cluster.namespace
    (_render_trainjob if kind.kind == "TrainJob" else _render_pytorchjob)(job, cfg, data_uri, out_uri)
    # The name hashes everything else: same params, data, outputs and cluster settings -> same job.
    job["metadata"]["name"] = f"{NAME_PREFIX}-{_digest(job)}"
    for labels in _pod_label_maps(job, kind):
        labels[INSTANCE_LABEL] = job["metadata"]["name"]
    return job


def pod_selector(job: dict) -> str:
    """Label selector of the job's pods (`kubectl logs -l ...`)."""
    return f"{INSTANCE_LABEL}={job['metadata']['name']}"


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the params text) as readable `|` blocks."""


_BlockDumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                                  style="|" if "\n" in s else None))


def to_yaml(job: dict) -> str:
    """The manifest as YAML, for people (`kubectl apply -f` takes it too)."""
    return yaml.dump(job, Dumper=_BlockDumper, sort_keys=False, width=120)


# ----------------------------------------------------------------------------------------------


def _check(cfg: Config, data_uri: str, out_uri: str) -> None:
    """Params that cannot work on the cluster fail here, before anything is submitted."""
    for arg, uri in (("data_uri", data_uri), ("out_uri", out_uri)):
        if not storage.is_s3(uri) or len(uri) <= len("s3://"):
            raise ClusterJobError(f"{arg} {uri!r}: the job's pods cannot read the launcher's local paths; pass an "
                                  f"s3:// URI (e.g. under cluster.root)")
    job, pcfg = cfg.cluster.job, cfg.pretrain
    if job.gpus_per_node and job.procs_per_node > job.gpus_per_node:
        raise ClusterJobError(f"cluster.job.procs_per_node ({job.procs_per_node}) exceeds cluster.job.gpus_per_node "
                              f"({job.gpus_per_node}): each process trains on a GPU of its own")
    try:  # the one batch rule (train/batching.py), for the job's world
        split_batch(pcfg.batch_size, job.nodes * job.procs_per_node, pcfg.micro_batch, objectives_of(pcfg),
                    world_keys="cluster.job.nodes x cluster.job.procs_per_node")
    except ValueError as e:
        raise ClusterJobError(str(e)) from None


def _env(cfg: Config) -> list[dict]:
    # The kubelet expands $(VAR) and turns $$ into $ in env values: doubling every $ keeps the
    # params text exactly as written.
    params = dump_config(cfg)
    if len(params.encode()) > MAX_PARAMS_BYTES:
        raise ClusterJobError(f"the params text is {len(params.encode())} bytes; a pod env value is limited to "
                              f"{MAX_PARAMS_BYTES} here: shorten params.yaml (e.g. long lists)")
    return [{"name": PARAMS_ENV, "value": params.replace("$", "$$")}]


def _secret_name(cfg: Config, secret: str) -> str:
    """The Secret the training job's pods read for `secret` (a key of SECRET_KEYS): its S3 key is
    pretrain's (cluster.secrets.s3_steps), its MLflow login the runs user's."""
    return cfg.cluster.secrets.s3_for("pretrain") if secret == "s3" else getattr(cfg.cluster.secrets, secret)


def _secret_key_refs(cfg: Config) -> list[dict]:
    refs = []
    for secret, keys in SECRET_KEYS.items():
        name = _secret_name(cfg, secret)
        for key, optional in keys.items():
            ref = {"name": name, "key": key, **({"optional": True} if optional else {})}
            refs.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return refs


def _resources(cfg: Config) -> dict:
    job = cfg.cluster.job
    requests = {"cpu": job.cpu, "memory": job.memory}
    limits = dict(requests)
    if job.gpus_per_node:  # an extended resource: its request defaults to the limit
        limits[job.accelerator_type] = job.gpus_per_node
    return {"requests": requests, "limits": limits}


def _placement(cfg: Config) -> dict:
    # Only when set: in a TrainJob an empty list would patch away the runtime's own tolerations.
    job = cfg.cluster.job
    out = {}
    if job.node_selector:
        out["nodeSelector"] = dict(job.node_selector)
    if job.tolerations:
        out["tolerations"] = [dict(t) for t in job.tolerations]
    return out


def _size_volumes(pod: dict, cfg: Config) -> None:
    """The template's scratch (/tmp) and shared-memory (/dev/shm) emptyDirs, sized from params."""
    sizes = {"scratch": cfg.cluster.job.scratch, "shm": cfg.cluster.job.shm}
    for volume in pod["volumes"]:
        volume["emptyDir"]["sizeLimit"] = sizes[volume["name"]]


def _trainer_args(data_uri: str, out_uri: str) -> list[str]:
    return ["--data", data_uri, "--out", out_uri]


def _render_trainjob(job: dict, cfg: Config, data_uri: str, out_uri: str) -> None:
    jcfg, spec = cfg.cluster.job, job["spec"]
    spec["runtimeRef"]["name"] = jcfg.runtime
    spec["activeDeadlineSeconds"] = jcfg.timeout_s
    trainer = spec["trainer"]
    trainer.update(image=cfg.cluster.trainer_image, numNodes=jcfg.nodes, numProcPerNode=jcfg.procs_per_node,
                   resourcesPerNode=_resources(cfg), env=_env(cfg) + _secret_key_refs(cfg))
    trainer["args"] = trainer["args"] + _trainer_args(data_uri, out_uri)
    (node,) = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    pod.update(_placement(cfg))
    _size_volumes(pod, cfg)


def _render_pytorchjob(job: dict, cfg: Config, data_uri: str, out_uri: str) -> None:
    jcfg, spec = cfg.cluster.job, job["spec"]
    spec["nprocPerNode"] = str(jcfg.procs_per_node)
    spec["runPolicy"]["activeDeadlineSeconds"] = jcfg.timeout_s
    master = spec["pytorchReplicaSpecs"]["Master"]
    pod = master["template"]["spec"]
    pod.update(_placement(cfg))
    _size_volumes(pod, cfg)
    (container,) = pod["containers"]
    container.update(image=cfg.cluster.trainer_image, resources=_resources(cfg), env=_env(cfg),
                     envFrom=[{"secretRef": {"name": _secret_name(cfg, s)}} for s in SECRET_KEYS])
    container["args"] = container["args"] + _trainer_args(data_uri, out_uri)
    if cfg.pretrain.metrics_port:  # 0 (any free port) and null (off) give nothing to scrape
        container["ports"].append({"name": "metrics", "containerPort": cfg.pretrain.metrics_port})
    if jcfg.nodes > 1:
        spec["pytorchReplicaSpecs"]["Worker"] = {**copy.deepcopy(master), "replicas": jcfg.nodes - 1}


def _pod_label_maps(job: dict, kind: JobKind) -> list[dict]:
    if kind.kind == "TrainJob":
        (node,) = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
        return [node["template"]["spec"]["template"]["metadata"]["labels"]]
    return [r["template"]["metadata"]["labels"] for r in job["spec"]["pytorchReplicaSpecs"].values()]


def _digest(job: dict) -> str:
    canonical = json.dumps(job, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:12]
