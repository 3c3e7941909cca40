"""The cluster pretraining job as rendered: TrainJob and PyTorchJob against their CRD schemas and the
pod policy, their command, environment, Secrets and labels, and params that cannot work failing
before anything is submitted. The launcher against a (fake) API server is
tests/integration/test_cluster_jobs.py; the real trainer under the rendered job's environment is
tests/integration/test_cluster_env.py."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.fake_kube import FakeKube, expand
from tests.k8s_policy import policy_violations, strict
from tests.tiny import tiny_config
from videossl.cluster.jobs import IMAGE_USER, INSTANCE_LABEL, KINDS, PARAMS_ENV, ClusterJobError, render_job, to_yaml
from videossl.cluster.launcher import launch_pretrain
from videossl.config import dump_config

ROOT = Path(__file__).resolve().parents[2]
CRDS = {"trainjob": ROOT / "k8s/crds/trainjob-crd.yaml", "pytorchjob": ROOT / "k8s/crds/pytorchjob-crd.yaml"}
DATA, OUT = "s3://videossl/runs/r1/data/ingest", "s3://videossl/runs/r1/outputs/pretrain"
RESERVED = re.compile(r"^(PET_|MASTER_ADDR$|MASTER_PORT$|WORLD_SIZE$|RANK$|LOCAL_RANK$)")  # set by the operators

COMBOS = {
    "1-node-cpu": ["cluster.job.nodes=1", "cluster.job.procs_per_node=1", "cluster.job.gpus_per_node=0",
                   "cluster.job.cpu='2'", "cluster.job.memory=4Gi"],
    "4-nodes-x-8-gpus": ["cluster.job.nodes=4", "cluster.job.procs_per_node=8", "cluster.job.gpus_per_node=8",
                         "pretrain.batch_size=64"],
    "selector-tolerations": ["cluster.job.node_selector={nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}",
                             "cluster.job.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]"],
}


def cfg_for(tmp_path, launcher: str, *extra: str):
    return tiny_config(tmp_path, f"cluster.job.launcher={launcher}", *extra)


def crd(launcher: str) -> dict:
    return yaml.safe_load(CRDS[launcher].read_text())


def pod_templates(job: dict) -> list[dict]:
    """The pod template (or pod template patch) of every replica of the job."""
    if job["kind"] == "TrainJob":
        (node,) = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
        return [node["template"]["spec"]["template"]]
    return [r["template"] for r in job["spec"]["pytorchReplicaSpecs"].values()]


def trainer_container(job: dict) -> dict:
    """command, args, env (and envFrom) of the trainer container, whichever the kind."""
    if job["kind"] == "TrainJob":
        return job["spec"]["trainer"]
    (container,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    return container


def effective_pods(job: dict) -> list[dict]:
    """Each replica's pod as the cluster would create it, as a Pod for the workload policy: a
    PyTorchJob's templates as they are; a TrainJob's runtime patch with the trainer container
    (image and resources from spec.trainer) merged into the patched `node` container."""
    if job["kind"] == "PyTorchJob":
        return [{"kind": "Pod", "metadata": {"name": f"{job['metadata']['name']}-{role.lower()}",
                                             **t.get("metadata", {})}, "spec": t["spec"]}
                for role, t in ((r, s["template"]) for r, s in job["spec"]["pytorchReplicaSpecs"].items())]
    (template,) = pod_templates(job)
    spec = copy.deepcopy(template["spec"])
    trainer = job["spec"]["trainer"]
    (node,) = [c for c in spec["containers"] if c["name"] == KINDS["trainjob"].container]
    node.update(image=trainer["image"], resources=trainer["resourcesPerNode"])
    return [{"kind": "Pod", "metadata": {"name": job["metadata"]["name"], **template.get("metadata", {})},
             "spec": spec}]


# ---- rendering ---------------------------------------------------------------------------------

@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("launcher", KINDS)
def test_rendered_job_matches_its_crd_schema(launcher, combo, tmp_path):
    cfg = cfg_for(tmp_path, launcher, *COMBOS[combo])
    job = render_job(cfg, DATA, OUT)
    definition = crd(launcher)
    (version,) = definition["spec"]["versions"]
    assert job["apiVersion"] == f"{definition['spec']['group']}/{version['name']}"
    assert job["kind"] == definition["spec"]["names"]["kind"]
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(strict(version["schema"]["openAPIV3Schema"])).iter_errors(job)]
    assert not errors, "\n".join(errors)
    # the CRD's own name rules (TrainJob's CEL validations; PyTorchJob names become Service names)
    name = job["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name

    jcfg, container = cfg.cluster.job, trainer_container(job)
    resources = container["resourcesPerNode" if launcher == "trainjob" else "resources"]
    assert resources["requests"] == {"cpu": jcfg.cpu, "memory": jcfg.memory}
    assert resources["limits"].get(jcfg.accelerator_type) == (jcfg.gpus_per_node or None)
    if launcher == "trainjob":
        assert (job["spec"]["trainer"]["numNodes"], job["spec"]["trainer"]["numProcPerNode"]) == \
               (jcfg.nodes, jcfg.procs_per_node)
    else:
        replicas = {k: r["replicas"] for k, r in job["spec"]["pytorchReplicaSpecs"].items()}
        assert replicas == ({"Master": 1, "Worker": jcfg.nodes - 1} if jcfg.nodes > 1 else {"Master": 1})
        assert job["spec"]["nprocPerNode"] == str(jcfg.procs_per_node)
    for pod in pod_templates(job):
        assert pod["spec"].get("nodeSelector", {}) == jcfg.node_selector
        assert pod["spec"].get("tolerations", []) == jcfg.tolerations


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("launcher", KINDS)
def test_rendered_job_pods_follow_the_pod_policy(launcher, combo, tmp_path):
    # The same policy as the kustomize output (tests/k8s_policy.py): non-root, no escalation, no
    # capabilities, a read-only root with emptyDirs where the trainer writes, no API token.
    job = render_job(cfg_for(tmp_path, launcher, *COMBOS[combo]), DATA, OUT)
    pods = effective_pods(job)
    assert len(pods) == (1 if launcher == "trainjob" or "nodes=1" in " ".join(COMBOS[combo]) else 2)
    for pod in pods:
        assert policy_violations(pod) == [], pod["metadata"]["name"]
        spec = pod["spec"]
        assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["runAsGroup"] == IMAGE_USER
        mounts = {m["mountPath"]: m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v["emptyDir"] for v in spec["volumes"]}
        assert mounts == {"/tmp": "scratch", "/dev/shm": "shm"}  # $TMPDIR (the worker's stage) and HOME
        assert volumes["scratch"]["sizeLimit"] == "200Gi" and volumes["shm"] == {"medium": "Memory",
                                                                                  "sizeLimit": "16Gi"}
    # the control: the policy sees a pod that drops the hardening
    broken = copy.deepcopy(pods[0])
    broken["spec"].pop("securityContext")
    broken["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    found = "\n".join(policy_violations(broken))
    assert "runAsNonRoot" in found and "seccompProfile" in found and "readOnlyRootFilesystem" in found


def test_trainjob_pods_run_as_a_service_account_without_a_token(tmp_path):
    # A PodSpecPatch cannot set automountServiceAccountToken: the ServiceAccount it names does.
    (pod,) = effective_pods(render_job(cfg_for(tmp_path, "trainjob"), DATA, OUT))
    accounts = {d["metadata"]["name"]: d for d in yaml.safe_load_all((ROOT / "k8s/base/rbac.yaml").read_text())
                if d and d["kind"] == "ServiceAccount"}
    account = accounts[pod["spec"]["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False
    bindings = [d for d in yaml.safe_load_all((ROOT / "k8s/base/rbac.yaml").read_text())
                if d and d["kind"] == "RoleBinding"]
    assert not any(s["name"] == account["metadata"]["name"] for b in bindings for s in b["subjects"])


def test_scratch_sizes_come_from_params(tmp_path):
    for launcher in KINDS:
        job = render_job(cfg_for(tmp_path, launcher, "cluster.job.scratch=20Gi", "cluster.job.shm=2Gi"), DATA, OUT)
        for pod in effective_pods(job):
            sizes = {v["name"]: v["emptyDir"]["sizeLimit"] for v in pod["spec"]["volumes"]}
            assert sizes == {"scratch": "20Gi", "shm": "2Gi"}


def test_rendering_is_deterministic_and_the_name_follows_the_content(tmp_path):
    cfg = cfg_for(tmp_path, "trainjob")
    first, again = render_job(cfg, DATA, OUT), render_job(cfg_for(tmp_path, "trainjob"), DATA, OUT)
    assert to_yaml(first) == to_yaml(again)  # same inputs, same bytes
    names = {render_job(cfg, DATA, OUT)["metadata"]["name"],
             render_job(cfg_for(tmp_path, "trainjob", "pretrain.lr=0.002"), DATA, OUT)["metadata"]["name"],
             render_job(cfg, DATA + "-v2", OUT)["metadata"]["name"],
             render_job(cfg_for(tmp_path, "pytorchjob"), DATA, OUT)["metadata"]["name"]}
    assert len(names) == 4 and all(n.startswith("videossl-pretrain-") for n in names)
    assert yaml.safe_load(to_yaml(first)) == first


@pytest.mark.parametrize("launcher", KINDS)
def test_job_runs_torchrun_on_the_worker_with_the_exact_params(launcher, tmp_path):
    # $(...) and $$ in a param must reach the pod unchanged through the kubelet's $(VAR) expansion
    cfg = cfg_for(tmp_path, launcher, "tracking.experiment='cost $$5 $(HOME) $HOME'")
    container = trainer_container(render_job(cfg, DATA, OUT))
    assert container["command"] == ["torchrun"]
    assert container["args"][-6:] == ["-m", "videossl.cluster.worker", "--data", DATA, "--out", OUT]
    env = {e["name"]: e for e in container["env"]}
    # exactly the params, but /metrics on every pod interface (the cluster's Prometheus scrapes the pod
    # IP); a workstation run keeps loopback
    assert cfg.pretrain.metrics_host == "127.0.0.1"
    in_pod = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"metrics_host": "0.0.0.0"})})
    assert expand(env[PARAMS_ENV]["value"], {"HOME": "/tmp"}) == dump_config(in_pod)
    assert not [n for n in env if RESERVED.match(n)], "the Trainer rejects jobs that set torchrun's reserved env"
    if launcher == "pytorchjob":  # the operator's MASTER_ADDR/PORT reach torchrun through the args
        assert container["args"][:2] == ["--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"]
    else:  # the Trainer's PET_* are read by torchrun itself
        assert container["args"][:-6] == []


@pytest.mark.parametrize("launcher", KINDS)
def test_credentials_come_only_from_the_named_secrets(launcher, tmp_path):
    # the job reads pretrain's S3 key (cluster.secrets.s3_steps), not ingest's
    cfg = cfg_for(tmp_path, launcher, "cluster.secrets={s3: team-s3-other, s3_steps: {pretrain: team-s3, "
                  "ingest: team-s3-sources}, mlflow: team-mlflow}")
    container = trainer_container(render_job(cfg, DATA, OUT))
    literal = {e["name"] for e in container["env"] if "value" in e}
    assert literal == {PARAMS_ENV}, "no value other than the params text may be written into the manifest"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    if launcher == "trainjob":  # no envFrom in a TrainJob: one reference per key
        assert {r["name"] for r in refs.values()} == {"team-s3", "team-mlflow"}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI"} <= set(refs)
        assert all(r["key"] == name for name, r in refs.items())
        assert "envFrom" not in container
    else:
        assert refs == {}
        assert container["envFrom"] == [{"secretRef": {"name": "team-s3"}}, {"secretRef": {"name": "team-mlflow"}}]


@pytest.mark.parametrize("launcher", KINDS)
def test_pods_are_labelled_for_the_podmonitor_and_the_log_selector(launcher, tmp_path):
    for port in (9400, None):
        cfg = cfg_for(tmp_path, launcher, f"pretrain.metrics_port={'null' if port is None else port}")
        job = render_job(cfg, DATA, OUT)
        for pod in pod_templates(job):
            labels = pod["metadata"]["labels"]
            assert labels["app.kubernetes.io/component"] == "trainer"
            assert labels[INSTANCE_LABEL] == job["metadata"]["name"]
        if launcher == "pytorchjob":
            for pod in pod_templates(job):
                ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
                assert ports.get("metrics") == port
        # A TrainJob cannot declare container ports (trainer.kubeflow.org/v1alpha1 has no field for
        # them): its pods are scraped by port number (see k8s/crds/README.md).


@pytest.mark.parametrize("overrides, data, key", [
    (["cluster.job.launcher=none"], DATA, "cluster.job.launcher"),
    ([], "data/ingest", "data_uri"),
    (["cluster.job.gpus_per_node=2", "cluster.job.procs_per_node=4"], DATA, "cluster.job.procs_per_node"),
    (["cluster.job.nodes=3"], DATA, "pretrain.batch_size"),
    (["cluster.job.nodes=1", "cluster.job.gpus_per_node=4", "cluster.job.procs_per_node=4", "pretrain.batch_size=8",
      "pretrain.micro_batch=4"], DATA, "pretrain.micro_batch"),
    # 2 nodes x 8 GPUs with a global batch of 16: one clip per rank, and InfoNCE on one clip learns nothing
    (["cluster.job.nodes=2", "cluster.job.gpus_per_node=8", "cluster.job.procs_per_node=8", "pretrain.batch_size=16",
      "pretrain.objective=contrastive"], DATA, "pretrain.batch_size (16) / cluster.job.nodes x cluster.job.procs_per_node (16)"),
])
def test_params_that_cannot_work_fail_before_submitting_naming_the_key(overrides, data, key, tmp_path):
    cfg = tiny_config(tmp_path, *overrides)
    with pytest.raises(ClusterJobError, match=re.escape(key)):
        render_job(cfg, data, OUT)
    with FakeKube() as kube, pytest.raises(ClusterJobError, match=re.escape(key)):
        launch_pretrain(cfg, data, OUT, api_client=kube.api_client())
    assert kube.requests == []  # nothing reached the cluster


