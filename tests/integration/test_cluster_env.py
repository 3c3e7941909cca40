"""The trainer under exactly the environment a cluster job gives its pods, run for real here.

Two "nodes" are two launchers on 127.0.0.1, each started the way the kubelet would start the pod of
the rendered job (videossl.cluster.jobs.render_job): the job's own command and args, its env with
the Secret references resolved (test Secrets pointing at the loopback S3 server), $(VAR) expanded,
plus what the operator injects into each pod:
- TrainJob (torch runtime): PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR/PORT;
- PyTorchJob: MASTER_ADDR/PORT, WORLD_SIZE, RANK, PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK.
The only substitutions: the master's address is 127.0.0.1 (not the pod's DNS name) and its port a
free one (not 29400 / 23456). Each node has its own TMPDIR and HOME, as each pod has its own disk,
and nothing else from this machine's environment. The dataset is read from S3 and the checkpoints
are written to S3, as on the cluster.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fake_kube import expand
from tests.servers import free_port
from tests.integration.test_distributed import kill_tree  # SIGKILLs torchrun and its workers together
from tests.tiny import tiny_config, tracking_overrides
from videossl import storage
from videossl.cluster.jobs import render_job
from videossl.models.checkpoint import CHECKPOINTS, load_checkpoint

NODES = 2
TIMEOUT_S = 240  # a node launch takes ~15-30 s on 2 busy cores


def upload_tree(s3_server, local: Path, bucket: str, prefix: str) -> str:
    """Publish the dataset as a pipeline step does (files, then the completion manifest last)."""
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3_server.env.items():
            env.setenv(key, value)
        return storage.upload_dir(local, f"s3://{bucket}/{prefix}", s3_server.endpoint_url)


def container_of(job: dict) -> dict:
    if job["kind"] == "TrainJob":
        return job["spec"]["trainer"]
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    return container


def pod_env(container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order (each
    value's $(VAR) expanded against what came before), a missing optional Secret key skipped."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(secrets[source["secretRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        if ref["key"] in secrets.get(ref["name"], {}):
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            assert ref.get("optional"), f"the pod would not start: Secret {ref['name']} has no key {ref['key']}"
    return env


def injected(job: dict, node_rank: int, port: int) -> dict[str, str]:
    """What the operator adds to the pod of node `node_rank`."""
    spec = job["spec"]
    if job["kind"] == "TrainJob":  # kubeflow/trainer pkg/runtime/framework/plugins/torch
        trainer = spec["trainer"]
        return {"PET_NNODES": str(trainer["numNodes"]), "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
                "PET_NODE_RANK": str(node_rank), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}
    replicas = sum(r["replicas"] for r in spec["pytorchReplicaSpecs"].values())  # pytorch/envvar.go
    return {"PYTHONUNBUFFERED": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "WORLD_SIZE": str(replicas * int(spec["nprocPerNode"])), "RANK": str(node_rank),
            "PET_NPROC_PER_NODE": spec["nprocPerNode"], "PET_NODE_RANK": str(node_rank), "PET_NNODES": str(replicas)}


@pytest.mark.parametrize("launcher", ["trainjob", "pytorchjob"])
def test_trainer_runs_as_two_nodes_under_the_jobs_environment(launcher, s3_server, tiny_data, tiny_root, tmp_path,
                                                             monkeypatch):
    bucket = s3_server.make_bucket("cluster-env")
    run = f"{launcher}-{uuid.uuid4().hex[:8]}"
    data = upload_tree(s3_server, tiny_data, bucket, f"{run}/data")
    out = f"s3://{bucket}/{run}/pretrain"
    cfg = tiny_config(tmp_path, f"cluster.job.launcher={launcher}", f"cluster.job.nodes={NODES}",
                      "cluster.job.procs_per_node=1", "cluster.job.gpus_per_node=0", "pretrain.steps=2",
                      "pretrain.baseline_steps=2", "pretrain.threads=1", "pretrain.metrics_port=null",
                      *tracking_overrides(tiny_root), "tracking.experiment=tests-cluster-env")
    job = render_job(cfg, data, out)
    container = container_of(job)
    secrets = {cfg.cluster.secrets.s3: {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                                        "AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1"},
               # the params name the MLflow store here; the cluster's tracking server needs a user
               cfg.cluster.secrets.mlflow: {"MLFLOW_TRACKING_USERNAME": "videossl", "MLFLOW_TRACKING_PASSWORD": "test"}}
    port, procs = free_port(), []
    try:
        for rank in range(NODES):
            disk = tmp_path / f"node-{rank}"
            disk.mkdir()
            env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(disk),
                   "TMPDIR": str(disk), **pod_env(container, secrets), **injected(job, rank, port)}
            argv = [expand(a, env) for a in container["command"] + container["args"]]
            with open(disk / "log", "wb") as log:  # the child keeps its own copy of the descriptor
                procs.append((subprocess.Popen(argv, env=env, cwd=disk, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True), disk / "log"))
        for proc, log in procs:
            try:
                proc.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a node did not finish in {TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            assert proc.returncode == 0, f"node exited {proc.returncode}:\n{log.read_text()[-4000:]}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                kill_tree(proc)

    # every node streamed the dataset from S3 (cluster.job.stream_shards): the small files into its index,
    # only the shards it read into its own bounded cache
    for rank in range(NODES):
        stage = tmp_path / f"node-{rank}" / "videossl-stage"
        assert list(stage.glob("index-*/manifest.jsonl")) and list(stage.glob("index-*/remote.json")), f"node {rank}"
        cached = {p.name for p in stage.glob("shards-*/*.npy")}
        assert cached and cached <= {p.name for p in (tiny_data / "shards").glob("*.npy")}, f"node {rank}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    digest = json.loads((tiny_data / "ingest.json").read_text())["digest"]
    for variant, name in CHECKPOINTS.items():
        state = load_checkpoint(f"{out}/{name}")
        result = state["result"]
        assert result["world_size"] == NODES and result["steps"] == 2, result
        assert len(result["weights_sha256"]) == NODES and len(set(result["weights_sha256"])) == 1  # DDP in step
        assert state["variant"] == variant and state["dataset_digest"] == digest
