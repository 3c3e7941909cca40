"""The cluster job launcher against a fake Kubernetes API server that records every call
(tests/fake_kube.py, the project's one mock: nothing real can run here), with checkpoints on a real
S3 server, and the RBAC Role, which must grant exactly the calls the launcher makes."""
from __future__ import annotations

import copy
import uuid
from pathlib import Path

import pytest
import yaml

from tests.fake_kube import FakeKube
from tests.tiny import tiny_config
from tests.unit.test_cluster_jobs import cfg_for, pod_templates
from videossl.cluster.jobs import INSTANCE_LABEL, KINDS, ClusterJobError, render_job
from videossl.cluster.launcher import JobFailed, JobTimeout, launch_pretrain
from videossl.models.checkpoint import CHECKPOINTS

ROOT = Path(__file__).resolve().parents[2]
DATA, OUT = "s3://videossl/runs/r1/data/ingest", "s3://videossl/runs/r1/outputs/pretrain"
BUCKET = "cluster-jobs"

# ---- the launcher, against the recording API server --------------------------------------------

DONE = {"trainjob": "Complete", "pytorchjob": "Succeeded"}


@pytest.fixture
def run(s3_server, monkeypatch, tmp_path):
    """(cfg, out URI) of a fresh run with fast polling; `checkpoints=True` puts its encoder files in S3."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)  # where the launcher checks the outputs
    s3_server.make_bucket(BUCKET)

    def make(launcher: str, *extra: str, checkpoints: bool = True):
        out = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/pretrain"
        if checkpoints:
            for name in CHECKPOINTS.values():
                s3_server.client().put_object(Bucket=BUCKET, Key=f"{out[len(f's3://{BUCKET}/'):]}/{name}", Body=b"x")
        return cfg_for(tmp_path, launcher, "cluster.job.poll_s=0.02", *extra), out
    return make


def add_pods(kube: FakeKube, job: dict, phase: str = "Running", **kw) -> None:
    labels = pod_templates(job)[0]["metadata"]["labels"]
    for i in range(2):
        kube.add_pod(job["metadata"]["namespace"], f"{job['metadata']['name']}-node-{i}", labels, phase, **kw)


@pytest.mark.parametrize("launcher", KINDS)
def test_success_returns_the_checkpoint_uri(launcher, run, capsys):
    cfg, out = run(launcher)
    job = render_job(cfg, DATA, out)
    with FakeKube() as kube:
        add_pods(kube, job)
        kube.finish_after(3, DONE[launcher])
        assert launch_pretrain(cfg, DATA, out, api_client=kube.api_client()) == out
    name, ns = job["metadata"]["name"], cfg.cluster.namespace
    stored = kube.objects[(KINDS[launcher].plural, ns, name)]
    assert stored["spec"] == job["spec"]  # what was submitted is exactly the rendered job
    assert kube.methods(name) == ["POST", "GET", "GET", "GET"]
    printed = capsys.readouterr().out
    assert f"kubectl logs -n {ns} -l {INSTANCE_LABEL}={name} -f" in printed
    assert f"{name}-node-0 Running" in printed and "succeeded" in printed


@pytest.mark.parametrize("launcher", KINDS)
def test_failure_raises_with_the_jobs_own_reason(launcher, run, capsys):
    cfg, out = run(launcher, checkpoints=False)
    job = render_job(cfg, DATA, out)
    log = "pretrain[video]: fp32\nstep 2/4 loss 0.91\nerror: pretrain.batch_size (4) must be divisible by 3\n"
    with FakeKube() as kube:
        add_pods(kube, job, phase="Failed", log=log, exit_code=2)
        kube.finish_after(2, "Failed", reason="BackoffLimitExceeded", message="node-1 exited with code 2")
        with pytest.raises(JobFailed) as failed:
            launch_pretrain(cfg, DATA, out, api_client=kube.api_client())
    message = str(failed.value)
    assert "BackoffLimitExceeded: node-1 exited with code 2" in message
    assert "last log line: error: pretrain.batch_size (4) must be divisible by 3" in message
    printed = capsys.readouterr().out
    assert f"---- last 40 lines of pod {job['metadata']['name']}-node-1 ----" in printed and "step 2/4" in printed


def test_an_api_server_that_is_briefly_unavailable_is_ridden_out(run, capsys):
    cfg, out = run("trainjob")
    with FakeKube() as kube:
        kube.finish_after(2, DONE["trainjob"])
        kube.fail_next_reads(503, times=3)
        assert launch_pretrain(cfg, DATA, out, api_client=kube.api_client()) == out
    assert capsys.readouterr().out.count("the API server did not answer") == 3


def test_a_refused_call_names_the_role(run):
    cfg, out = run("trainjob")
    with FakeKube() as kube:
        kube.fail_next_reads(403, times=1)
        with pytest.raises(ClusterJobError, match=r"not allowed \(403.*k8s/base/rbac\.yaml"):
            launch_pretrain(cfg, DATA, out, api_client=kube.api_client())


def test_timeout_deletes_the_job_and_says_which_key(run):
    cfg, out = run("trainjob", checkpoints=False)
    # timeout_s may not go below 60 s in params; the wait loop is what is under test here
    cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(
        update={"job": cfg.cluster.job.model_copy(update={"timeout_s": 1})})})
    name = render_job(cfg, DATA, out)["metadata"]["name"]
    with FakeKube() as kube:  # the job never finishes
        with pytest.raises(JobTimeout, match=r"cluster\.job\.timeout_s \(1 s\)"):
            launch_pretrain(cfg, DATA, out, api_client=kube.api_client())
    assert kube.methods(name)[-1] == "DELETE" and not kube.objects


@pytest.mark.parametrize("launcher", KINDS)
def test_resubmission_adopts_the_job_of_an_earlier_attempt(launcher, run):
    cfg, out = run(launcher)
    job = render_job(cfg, DATA, out)
    name = job["metadata"]["name"]
    with FakeKube() as kube:
        kube.put(copy.deepcopy(job))  # the first attempt's job, still running
        uid = kube.objects[(KINDS[launcher].plural, cfg.cluster.namespace, name)]["metadata"]["uid"]
        kube.finish_after(2, DONE[launcher])
        assert launch_pretrain(cfg, DATA, out, api_client=kube.api_client()) == out
        # and once more, now that it has succeeded: adopted again, nothing resubmitted
        assert launch_pretrain(cfg, DATA, out, api_client=kube.api_client()) == out
    assert kube.methods(name) == ["POST", "GET", "GET", "POST", "GET", "GET"]  # each POST answered 409
    assert kube.objects[(KINDS[launcher].plural, cfg.cluster.namespace, name)]["metadata"]["uid"] == uid


def test_a_failed_job_of_an_earlier_attempt_is_replaced(run, capsys):
    cfg, out = run("pytorchjob")
    job = render_job(cfg, DATA, out)
    name = job["metadata"]["name"]
    failed = {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailed", "message": "node lost"}]}
    with FakeKube() as kube:
        kube.put(copy.deepcopy(job), status=failed)
        kube.finish_after(2, DONE["pytorchjob"])
        assert launch_pretrain(cfg, DATA, out, api_client=kube.api_client()) == out
    # 409, read the failed job, delete it, see it gone (404), submit again, then wait for the new one
    assert kube.methods(name) == ["POST", "GET", "DELETE", "GET", "POST", "GET", "GET"]
    assert "failed (PodFailed: node lost): deleting it and submitting it again" in capsys.readouterr().out


def test_a_job_that_succeeds_without_checkpoints_is_an_error(run):
    cfg, out = run("trainjob", checkpoints=False)
    with FakeKube() as kube:
        kube.finish_after(1, DONE["trainjob"])
        with pytest.raises(ClusterJobError, match=r"encoder\.pt, frame_encoder\.pt is not in s3://"):
            launch_pretrain(cfg, DATA, out, api_client=kube.api_client())


# ---- RBAC --------------------------------------------------------------------------------------

def test_role_grants_exactly_the_calls_the_launcher_makes(run):
    """Every path of the launcher (success, failure with logs, timeout, adopting, replacing a failed
    job) for both kinds, against one recording server: the (group, resource, verb) set it used must
    equal what the Role grants, nothing missing and nothing extra."""
    with FakeKube() as kube:
        for launcher in KINDS:
            cfg, out = run(launcher)
            job = render_job(cfg, DATA, out)
            kube.finish_after(2, DONE[launcher])
            launch_pretrain(cfg, DATA, out, api_client=kube.api_client())  # success
            kube.objects.clear()
            kube.put(copy.deepcopy(job), status={"conditions": [{"type": "Failed", "status": "True"}]})
            launch_pretrain(cfg, DATA, out, api_client=kube.api_client())  # replaces the failed job
            kube.objects.clear()
            add_pods(kube, job, phase="Failed", log="error: boom\n", exit_code=1)
            kube.finish_after(1, "Failed")
            with pytest.raises(JobFailed):
                launch_pretrain(cfg, DATA, out, api_client=kube.api_client())  # failure, logs read
            kube.finish = None
            timed = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(
                update={"job": cfg.cluster.job.model_copy(update={"timeout_s": 1})})})
            with pytest.raises(JobTimeout):
                launch_pretrain(timed, DATA, out, api_client=kube.api_client())  # timeout, deleted
        used = kube.calls()

    docs = [d for d in yaml.safe_load_all((ROOT / "k8s/base/rbac.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    granted = {(group, resource, verb) for rule in kinds["Role"]["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert used == granted, f"used but not granted: {used - granted}; granted but never used: {granted - used}"

    cfg = tiny_config(ROOT)
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert cfg.cluster.service_account in accounts
    binding = kinds["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": kinds["Role"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": cfg.cluster.service_account}]
