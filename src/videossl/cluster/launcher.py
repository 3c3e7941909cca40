"""Submit the multi-node pretraining job, wait for it, and return where its checkpoints are.

    out = launch_pretrain(cfg, "s3://bucket/run/data/ingest", "s3://bucket/run/outputs/pretrain")

- Submitting is idempotent: the job's name is a hash of the rendered job, so a retried KFP task
  finds the job its first attempt created and waits for it instead of failing on the conflict. A job
  left *failed* by an earlier attempt is deleted and submitted again (the trainer resumes from its
  newest checkpoint under the same out URI).
- Waiting polls the job every cluster.job.poll_s and prints each change of its pods. Past
  cluster.job.timeout_s the job is deleted (nobody is left to use its result, and it holds GPU nodes;
  its checkpoints stay, so a rerun resumes) and JobTimeout is raised. The job also carries the
  same deadline, so the cluster stops it even if this process dies.
- A failed job raises JobFailed with the job's own reason and message, after printing the end of
  its failed pods' logs.

The Kubernetes calls, and nothing else (k8s/base/rbac.yaml grants exactly these): create, get and
delete the job; list pods; get pods/log.
"""
from __future__ import annotations

import time

import urllib3
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from videossl import storage
from videossl.cluster.jobs import ClusterJobError, JobKind, job_kind, pod_selector, render_job
from videossl.config import Config
from videossl.models.checkpoint import CHECKPOINTS

LOG_TAIL_LINES = 40
MAX_LOGGED_PODS = 4
# Answers worth another poll rather than failing a day-long wait: overload and server errors, and a
# connection that could not be made (API server restarting). _Kube turns every other error into a
# ClusterJobError, so an ApiException that gets out of it is one of these.
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
TRANSIENT = (ApiException, urllib3.exceptions.HTTPError)


class JobFailed(ClusterJobError):
    """The job ran and failed; the message carries the job's own reason."""


class JobTimeout(ClusterJobError):
    """The job did not finish within cluster.job.timeout_s (it was deleted)."""


def launch_pretrain(cfg: Config, data_uri: str, out_uri: str, *, api_client: k8s.ApiClient | None = None) -> str:
    """Run pretraining as a cluster job (cluster.job.launcher: trainjob | pytorchjob) on `data_uri`
    (s3:// prefix of an ingested dataset); returns `out_uri`, where the job wrote encoder.pt and
    frame_encoder.pt. `api_client`: None = in-cluster config (a KFP pod), else ~/.kube/config."""
    job = render_job(cfg, data_uri, out_uri)
    kube = _Kube(api_client or default_api_client(), job_kind(cfg), cfg.cluster.namespace)
    jcfg = cfg.cluster.job
    deadline = time.monotonic() + jcfg.timeout_s
    try:
        _submit(kube, job, jcfg.poll_s, deadline)
    except TRANSIENT as e:  # nothing to wait for yet: a retry of the task is the way on
        raise ClusterJobError(f"submitting the job failed, the Kubernetes API did not answer: {e}") from None
    name, selector = job["metadata"]["name"], pod_selector(job)
    print(f"pretrain: status: kubectl get {kube.kind.plural} -n {kube.namespace} {name} -w", flush=True)
    print(f"pretrain: logs:   kubectl logs -n {kube.namespace} -l {selector} -f --prefix "
          f"--max-log-requests={jcfg.nodes}", flush=True)
    _wait(kube, name, selector, jcfg.poll_s, jcfg.timeout_s, deadline)
    _check_outputs(kube, name, out_uri)
    print(f"pretrain: {kube.kind.kind} {name} succeeded; checkpoints in {out_uri}", flush=True)
    return out_uri


def default_api_client() -> k8s.ApiClient:
    from kubernetes import config

    try:
        config.load_incluster_config()  # in a pod: its ServiceAccount's token
    except config.ConfigException:
        try:
            config.load_kube_config()  # a workstation
        except (config.ConfigException, OSError) as e:
            raise ClusterJobError(f"no Kubernetes credentials (not in a pod, and no kubeconfig): {e}") from None
    return k8s.ApiClient()


def job_state(kind: JobKind, obj: dict) -> tuple[str, str]:
    """("succeeded" | "failed" | "running", why) from the job's status conditions."""
    true = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    for state, ctype in (("failed", "Failed"), ("succeeded", kind.done)):
        if ctype in true:
            c = true[ctype]
            return state, f"{c.get('reason') or ctype}: {c.get('message') or '(no message)'}"
    return "running", ", ".join(sorted(true)) or "no conditions yet"


# ----------------------------------------------------------------------------------------------


class _Kube:
    """The few API calls the launcher makes, on one kind of job in one namespace. A refused call
    raises ClusterJobError saying why; an overloaded or failing server raises the client's own
    exception (TRANSIENT), which the wait loop rides out."""

    def __init__(self, api_client: k8s.ApiClient, kind: JobKind, namespace: str):
        self.custom, self.core = k8s.CustomObjectsApi(api_client), k8s.CoreV1Api(api_client)
        self.kind, self.namespace = kind, namespace
        self._where = (kind.group, kind.version, namespace, kind.plural)

    def create(self, job: dict) -> bool:
        """False when a job of that name exists already."""
        try:
            self.custom.create_namespaced_custom_object(*self._where, job)
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise self._error(e, f"submitting {self.kind.kind} {job['metadata']['name']}") from None

    def get(self, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(*self._where, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._error(e, f"reading {self.kind.kind} {name}") from None

    def delete(self, name: str) -> None:
        # Foreground: the job object goes only after its pods, so a resubmission under the same name
        # never meets the old pods.
        try:
            self.custom.delete_namespaced_custom_object(*self._where, name,
                                                        body=k8s.V1DeleteOptions(propagation_policy="Foreground"))
        except ApiException as e:
            if e.status != 404:
                raise self._error(e, f"deleting {self.kind.kind} {name}") from None

    def pods(self, selector: str) -> list[k8s.V1Pod]:
        try:
            return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        except ApiException as e:
            raise self._error(e, f"listing the pods {selector}") from None

    def log_tail(self, pod: str) -> str:
        try:
            return self.core.read_namespaced_pod_log(pod, self.namespace, container=self.kind.container,
                                                     tail_lines=LOG_TAIL_LINES)
        except ApiException as e:
            raise self._error(e, f"reading the log of pod {pod}") from None

    def _error(self, e: ApiException, action: str) -> Exception:
        if e.status in TRANSIENT_STATUS:
            return e
        if e.status in (401, 403):
            return ClusterJobError(f"{action}: not allowed ({e.status} {e.reason}); the launcher's ServiceAccount "
                                   f"needs the Role in k8s/base/rbac.yaml in namespace {self.namespace} "
                                   f"(cluster.namespace)")
        if e.status == 404:
            return ClusterJobError(f"{action}: not found; does this cluster serve {self.kind.api_version} "
                                   f"{self.kind.plural}? (is its operator installed? cluster.job.launcher picks "
                                   f"trainjob or pytorchjob)")
        body = e.body[:500] if isinstance(e.body, str) else ""
        return ClusterJobError(f"{action}: HTTP {e.status} {e.reason} {body}".strip())


def _submit(kube: _Kube, job: dict, poll_s: float, deadline: float) -> None:
    name = job["metadata"]["name"]
    what = f"{kube.kind.kind} {kube.namespace}/{name}"
    if kube.create(job):
        print(f"pretrain: submitted {what}", flush=True)
        return
    existing = kube.get(name)
    state, why = job_state(kube.kind, existing) if existing else ("gone", "")
    if state in ("running", "succeeded") and not existing["metadata"].get("deletionTimestamp"):
        print(f"pretrain: {what} exists (an earlier attempt of this task submitted it; {state}): adopting it",
              flush=True)
        return
    if state == "failed":
        print(f"pretrain: {what} from an earlier attempt failed ({why}): deleting it and submitting it again; "
              f"the trainer resumes from its newest checkpoint", flush=True)
        kube.delete(name)
    while kube.get(name) is not None:  # being deleted: its pods go first
        if time.monotonic() >= deadline:
            raise JobTimeout(f"{what} was still being deleted when cluster.job.timeout_s ran out")
        time.sleep(poll_s)
    if not kube.create(job):
        raise ClusterJobError(f"{what} was created again by someone else while this task replaced it")
    print(f"pretrain: submitted {what}", flush=True)


def _describe(pods: list[k8s.V1Pod]) -> str:
    """'name Running, name Pending (ImagePullBackOff)': what a person watching the task wants to see."""
    out = []
    for p in sorted(pods, key=lambda p: p.metadata.name):
        reasons = []
        for s in (p.status.container_statuses or []) if p.status else []:
            if s.state and s.state.waiting and s.state.waiting.reason:
                reasons.append(s.state.waiting.reason)
            elif s.state and s.state.terminated:
                reasons.append(f"{s.state.terminated.reason or 'exited'} {s.state.terminated.exit_code}")
        phase = p.status.phase if p.status else "Unknown"
        out.append(f"{p.metadata.name} {phase}" + (f" ({', '.join(reasons)})" if reasons else ""))
    return ", ".join(out) or "none yet"


def _wait(kube: _Kube, name: str, selector: str, poll_s: float, timeout_s: float, deadline: float) -> None:
    what, last = f"{kube.kind.kind} {kube.namespace}/{name}", None
    while True:
        try:
            obj = kube.get(name)
            pods = None if obj is None else _describe(kube.pods(selector))
        except TRANSIENT as e:
            print(f"pretrain: the API server did not answer ({type(e).__name__}: {e}); trying again", flush=True)
        else:
            if obj is None:
                raise ClusterJobError(f"{what} disappeared while it ran (deleted by someone else?)")
            state, why = job_state(kube.kind, obj)
            if state == "succeeded":
                return
            if state == "failed":
                last_line = _print_failed_logs(kube, selector)
                raise JobFailed(f"{what} failed: {why}" + (f"; last log line: {last_line}" if last_line else "") +
                                " (the end of its pods' logs is printed above)")
            if pods != last:
                print(f"pretrain: {what}: {why}; pods: {pods}", flush=True)
                last = pods
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            try:
                kube.delete(name)
                done = "deleted it to free its nodes"
            except TRANSIENT as e:
                done = f"deleting it failed ({e}): delete it by hand (its deadline stops it too)"
            raise JobTimeout(f"{what} did not finish within cluster.job.timeout_s ({timeout_s} s): {done}; its "
                             f"checkpoints stay, so a rerun resumes from them")
        time.sleep(min(poll_s, remaining))


def _print_failed_logs(kube: _Kube, selector: str) -> str | None:
    """Print the end of the failed pods' logs (all pods' if none is marked failed); returns the
    last non-empty line of the first one, for the error message."""
    try:
        pods = kube.pods(selector)
    except (*TRANSIENT, ClusterJobError) as e:  # the job's own failure is the error to report
        print(f"pretrain: could not list the job's pods for their logs: {e}", flush=True)
        return None

    def failed(p: k8s.V1Pod) -> bool:
        statuses = (p.status.container_statuses or []) if p.status else []
        return (p.status and p.status.phase == "Failed") or any(
            s.state and s.state.terminated and s.state.terminated.exit_code for s in statuses)

    chosen = sorted([p for p in pods if failed(p)] or pods, key=lambda p: p.metadata.name)[:MAX_LOGGED_PODS]
    first = None
    for p in chosen:
        try:
            text = kube.log_tail(p.metadata.name)
        except (*TRANSIENT, ClusterJobError) as e:
            print(f"pretrain: no log for pod {p.metadata.name}: {getattr(e, 'reason', e)}", flush=True)
            continue
        print(f"---- last {LOG_TAIL_LINES} lines of pod {p.metadata.name} ----\n{text.rstrip()}", flush=True)
        lines = [line for line in text.splitlines() if line.strip()]
        first = first or (lines[-1].strip() if lines else None)
    return first


def _check_outputs(kube: _Kube, name: str, out_uri: str) -> None:
    out = out_uri.rstrip("/")
    present = {o.uri for o in storage.list_s3(out + "/")}
    missing = [f for f in CHECKPOINTS.values() if f"{out}/{f}" not in present]
    if missing:
        raise ClusterJobError(f"{kube.kind.kind} {kube.namespace}/{name} succeeded, but {', '.join(missing)} "
                              f"is not in {out}; see the job's logs")
