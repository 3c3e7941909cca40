"""Kubernetes manifests (k8s/): every overlay renders, validates strictly and obeys the policy.

- `kubectl kustomize` renders each overlay (no kubectl = a failure, never a skip).
- Built-in kinds go through `kubernetes-validate --strict`. It only *warns* (exit 0) about kinds it
  has no schema for, so custom kinds are split off first and validated with jsonschema against the
  CRD schemas in k8s/crds/, made strict the same way; any warning left fails the test.
- The policy: requests and limits, non-root, no privilege escalation, no capabilities, read-only
  root filesystem (or a per-container justification annotation), RuntimeDefault seccomp, pinned
  images, a named service account wherever an API token is mounted.
- NetworkPolicies are evaluated (a small model of their ingress and egress semantics) for who may reach whom.
- Names, ports and images agree with params.yaml.
"""
from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.k8s_policy import WRITABLE_ROOTFS_PREFIX, pod_template, policy_violations, strict
from videossl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
WORKLOAD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
CFG = load_config(ROOT / "params.yaml")


# ---- rendering and schemas ---------------------------------------------------------------------

@functools.cache
def render(overlay: str, root: Path = K8S) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with its built-in kustomize) is not on PATH: install kubectl >= 1.27 to test k8s/")
    proc = subprocess.run([kubectl, "kustomize", str(root / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {root}/overlays/{overlay} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict openAPIV3Schema, from every CustomResourceDefinition in k8s/crds/."""
    out = {}
    for path in sorted((K8S / "crds").glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = \
                    strict(version["schema"]["openAPIV3Schema"])
    return out


def crd_errors(doc: dict) -> list[str]:
    schema = crd_schemas()[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def kubernetes_validate(docs: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    if not KUBERNETES_VALIDATE.exists():
        pytest.fail(f"{KUBERNETES_VALIDATE} is missing: kubernetes-validate is in requirements.lock (make setup)")
    path = tmp_path / "builtin.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return subprocess.run([str(KUBERNETES_VALIDATE), "--strict", "--quiet", str(path)],
                          capture_output=True, text=True, timeout=120)


def by_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_both_overlays_exist():
    assert {"dev", "prod"} <= set(OVERLAYS), OVERLAYS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_stack(overlay):
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service",
            "PersistentVolumeClaim", "PodMonitor", "NetworkPolicy"} <= kinds, kinds
    assert {"mlflow", "pushgateway"} <= set(by_kind(docs, "Deployment"))
    assert CFG.cluster.service_account in by_kind(docs, "ServiceAccount")
    assert set(by_kind(docs, "Namespace")) == {CFG.cluster.namespace}
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == CFG.cluster.namespace, f"{d['kind']}/{d['metadata']['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_pass_kubernetes_validate_strict(overlay, tmp_path):
    builtin = [d for d in render(overlay) if (d["apiVersion"], d["kind"]) not in crd_schemas()]
    proc = kubernetes_validate(builtin, tmp_path)
    # WARN = no schema for a kind: it would pass unchecked, so it fails here (add its CRD to k8s/crds/).
    problems = [line for line in proc.stdout.splitlines() if line.startswith(("ERROR", "WARN", "FATAL"))]
    assert proc.returncode == 0 and not problems, "\n".join(problems) or proc.stdout + proc.stderr


def test_kubernetes_validate_only_warns_about_unknown_kinds(tmp_path):
    # Why custom kinds are split off above: the tool passes (exit 0) what it has no schema for.
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"x": 1}}
    proc = kubernetes_validate([unknown], tmp_path)
    assert proc.returncode == 0 and "WARN" in proc.stdout, proc.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_kinds_match_their_crd_schema(overlay):
    custom = [d for d in render(overlay) if (d["apiVersion"], d["kind"]) in crd_schemas()]
    assert len([d for d in custom if d["kind"] == "PodMonitor"]) == 2  # trainer + pushgateway
    errors = {f"{d['kind']}/{d['metadata']['name']}": crd_errors(d) for d in custom}
    assert not any(errors.values()), errors


def test_crd_files_are_valid_crds(tmp_path):
    docs = [d for p in sorted((K8S / "crds").glob("podmonitor*.y*ml")) for d in yaml.safe_load_all(p.read_text()) if d]
    assert [d["kind"] for d in docs] == ["CustomResourceDefinition"]
    proc = kubernetes_validate(docs, tmp_path)
    assert proc.returncode == 0 and "WARN" not in proc.stdout, proc.stdout + proc.stderr
    for schema in crd_schemas().values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_podmonitor_schema_rejects_mistakes():
    # Controls: the CRD schema must catch a misspelt field, a bad duration and a missing selector.
    good = copy.deepcopy(by_kind(render(OVERLAYS[0]), "PodMonitor")["videossl-trainer"])
    assert crd_errors(good) == []
    typo = copy.deepcopy(good)
    typo["spec"]["podMetricEndpoints"] = typo["spec"].pop("podMetricsEndpoints")
    bad_interval = copy.deepcopy(good)
    bad_interval["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    no_selector = copy.deepcopy(good)
    del no_selector["spec"]["selector"]
    for broken in (typo, bad_interval, no_selector):
        assert crd_errors(broken), broken["spec"]


# ---- workload policy ---------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespace_enforces_the_restricted_pod_security_standard(overlay):
    (namespace,) = by_kind(render(overlay), "Namespace").values()
    labels = namespace["metadata"]["labels"]
    assert {labels.get(f"pod-security.kubernetes.io/{mode}") for mode in ("enforce", "warn", "audit")} == {"restricted"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_follows_the_policy(overlay):
    workloads = [d for d in render(overlay) if d["kind"] in WORKLOAD_KINDS]
    assert len(workloads) >= 2, [d["metadata"]["name"] for d in workloads]
    violations = [v for w in workloads for v in policy_violations(w)]
    assert not violations, "\n".join(violations)


def test_policy_catches_each_violation():
    # Control: a workload breaking every rule gets one finding per rule; the justified exception passes.
    bad = {"kind": "Deployment", "metadata": {"name": "bad"}, "spec": {"template": {"metadata": {}, "spec": {
        "hostNetwork": True, "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "initContainers": [{"name": "init", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}],
        "containers": [{"name": "app", "image": "nginx:latest", "securityContext": {
            "runAsUser": 0, "privileged": True, "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}}]}}}}
    found = "\n".join(policy_violations(bad))
    for expected in ("API token", "init: no requests.cpu", "init: no requests.memory", "init: no limits.memory",
                     "app: no limits.cpu", "runAsNonRoot", "runAsUser 0", "allowPrivilegeEscalation", "privileged",
                     "capabilities", "seccompProfile", "readOnlyRootFilesystem", "'busybox' has no tag",
                     "hostNetwork", "volume host is ['hostPath']",
                     "'nginx:latest' uses :latest"):
        assert expected in found, expected
    ok = copy.deepcopy(render(OVERLAYS[0]))
    mlflow = by_kind(ok, "Deployment")["mlflow"]
    mlflow["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    assert any("readOnlyRootFilesystem" in v for v in policy_violations(mlflow))
    mlflow["spec"]["template"]["metadata"]["annotations"] = {
        WRITABLE_ROOTFS_PREFIX + "mlflow": "the server unpacks its UI into the image at start"}
    assert policy_violations(mlflow) == []


def image_parts(ref: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference: repo[:tag][@sha256:...] (a registry port is not a tag)."""
    ref, _, digest = ref.partition("@")
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    return name, tag or None, digest or None


def image_mismatches(docs, overlay_dir: Path, param_image: str) -> list[str]:
    """Where the rendered workloads' images are not what the overlay's `images:` sets (its digest once
    pinned, else its tag), or the MLflow server's is not params.yaml's cluster.image (the same digest
    once pinned; kustomize writes a pinned image as name@digest)."""
    pinned = {i["name"]: i for i in yaml.safe_load((overlay_dir / "kustomization.yaml").read_text())["images"]}
    images = {c["image"] for w in docs if w["kind"] in WORKLOAD_KINDS
              for c in pod_template(w)[1]["containers"] + pod_template(w)[1].get("initContainers", [])}
    wrong = []
    for image in sorted(images):
        name, tag, digest = image_parts(image)
        entry = pinned.get(name, {})
        if not entry or (entry.get("digest") != digest if "digest" in entry else entry.get("newTag") != tag):
            wrong.append(f"{image} is not set by {overlay_dir.name}'s images:")
    served, wanted = image_parts(by_kind(docs, "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]["image"]), image_parts(param_image)
    if served[0] != wanted[0] or (served[2] != wanted[2] if wanted[2] else served[1:] != wanted[1:]):
        wrong.append(f"the MLflow server runs {served}, params.yaml's cluster.image is {wanted}")
    return wrong


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_set_in_one_place_and_match_params(overlay):
    # Each overlay's `images:` list names every image it deploys; the pipeline image is params.yaml's.
    assert image_mismatches(render(overlay), K8S / "overlays" / overlay, CFG.cluster.image) == []


def test_a_pinned_overlay_renders_digests_that_match_pinned_params(tmp_path):
    """After `videossl pin-images`, kustomize renders name@digest: the image check reads digests, and a
    pinned overlay beside tag-only params (or another digest) is a mismatch."""
    from videossl.cluster.images import pin_overlay

    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    digest = "sha256:" + "ab" * 32
    pin_overlay(root / "overlays" / "prod", resolve=lambda ref: f"{ref}@{digest}")
    docs = render("prod", root)
    assert all("@" + digest in c["image"] for w in docs if w["kind"] in WORKLOAD_KINDS for c in pod_template(w)[1]["containers"])
    assert image_mismatches(docs, root / "overlays" / "prod", f"{CFG.cluster.image}@{digest}") == []
    assert image_mismatches(docs, root / "overlays" / "prod", CFG.cluster.image)  # tag-only params: refused
    assert image_mismatches(docs, root / "overlays" / "prod", f"{CFG.cluster.image}@sha256:{'cd' * 32}")
    assert image_parts("localhost:5000/videossl:0.1@" + digest) == ("localhost:5000/videossl", "0.1", digest)
    assert image_parts("localhost:5000/videossl") == ("localhost:5000/videossl", None, None)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_from_secrets_only(overlay):
    docs = render(overlay)
    assert "Secret" not in {d["kind"] for d in docs}, "Secrets are created by hand (docs/cluster.md), never committed"
    for w in (d for d in docs if d["kind"] in WORKLOAD_KINDS):
        for c in pod_template(w)[1]["containers"]:
            for env in c.get("env", []):
                if any(s in env["name"] for s in ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY")):
                    assert "value" not in env, f"{c['name']}: {env['name']} is a literal"
    mlflow = by_kind(docs, "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": CFG.cluster.secrets.s3}} in mlflow["envFrom"]
    args = " ".join(mlflow["args"])
    assert "--artifacts-destination" in args and "--serve-artifacts" in args


# ---- network policies --------------------------------------------------------------------------

def selector_matches(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": present and value in e.get("values", []), "NotIn": not present or value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


def port_allowed(ports: list[dict] | None, port: int, protocol: str = "TCP") -> bool:
    if not ports:
        return True
    for p in ports:
        assert isinstance(p.get("port"), int), f"use numeric ports in NetworkPolicies (this model checks them): {p}"
        if p.get("protocol", "TCP") == protocol and p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


EXTERNAL = None  # a destination outside the cluster (S3, the API server's address): only ipBlocks match it


def egress_allowed(docs, src: dict, dst: dict | None, dst_namespace: str | None, port: int,
                   protocol: str = "TCP") -> bool:
    """Whether a pod labelled `src` in our namespace may open `port` on a pod labelled `dst` in
    `dst_namespace`, or on an outside address (dst EXTERNAL)."""
    namespace = CFG.cluster.namespace
    policies = [p["spec"] for p in docs if p["kind"] == "NetworkPolicy"
                and "Egress" in p["spec"].get("policyTypes", []) and selector_matches(p["spec"]["podSelector"], src)]
    if not policies:
        return True
    for policy in policies:
        for rule in policy.get("egress") or []:
            if not port_allowed(rule.get("ports"), port, protocol):
                continue
            if not rule.get("to"):
                return True
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    assert peer["ipBlock"]["cidr"] == "0.0.0.0/0" and not peer["ipBlock"].get("except"), \
                        f"this model knows only 'any address': {peer}"
                    if dst is EXTERNAL:
                        return True
                    continue
                if dst is EXTERNAL:
                    continue
                ns_ok = (selector_matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": dst_namespace})
                         if "namespaceSelector" in peer else dst_namespace == namespace)
                if ns_ok and selector_matches(peer.get("podSelector", {}), dst):
                    return True
    return False


def ingress_allowed(docs, dst: dict, src: dict, src_namespace: str, port: int) -> bool:
    """Whether a pod labelled `src` in `src_namespace` may open `port` on a pod labelled `dst` in ours."""
    namespace = CFG.cluster.namespace
    policies = [p["spec"] for p in docs if p["kind"] == "NetworkPolicy"
                and "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and selector_matches(p["spec"]["podSelector"], dst)]
    if not policies:
        return True  # a pod no policy selects is not isolated
    src_ns_labels = {"kubernetes.io/metadata.name": src_namespace}
    for policy in policies:
        for rule in policy.get("ingress") or []:
            if not port_allowed(rule.get("ports"), port):
                continue
            if not rule.get("from"):
                return True
            for peer in rule["from"]:
                if "ipBlock" in peer:
                    continue
                ns_ok = (selector_matches(peer["namespaceSelector"], src_ns_labels) if "namespaceSelector" in peer
                         else src_namespace == namespace)
                if ns_ok and selector_matches(peer.get("podSelector", {}), src):
                    return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_what_is_needed(overlay):
    docs = render(overlay)
    ns = CFG.cluster.namespace
    mlflow_port = by_kind(docs, "Service")["mlflow"]["spec"]["ports"][0]["port"]
    push_port = by_kind(docs, "Service")["pushgateway"]["spec"]["ports"][0]["port"]
    metrics_port = CFG.pretrain.metrics_port
    mlflow, push = {"app.kubernetes.io/name": "mlflow"}, {"app.kubernetes.io/name": "pushgateway"}
    trainer = {"app.kubernetes.io/component": "trainer"}
    pipeline = {"app.kubernetes.io/component": "pipeline"}
    kfp_task = {"pipelines.kubeflow.org/v2_component": "true"}
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    stranger = {"app": "something-else"}
    allowed = [(mlflow, pipeline, ns, mlflow_port), (mlflow, kfp_task, ns, mlflow_port), (mlflow, trainer, ns, mlflow_port),
               (push, pipeline, ns, push_port), (push, kfp_task, ns, push_port), (push, prometheus, "monitoring", push_port),
               (trainer, trainer, ns, 29500), (trainer, trainer, ns, 45123),  # rendezvous, then gloo/NCCL ports
               (trainer, prometheus, "monitoring", metrics_port)]
    denied = [(mlflow, stranger, ns, mlflow_port), (mlflow, pipeline, "other", mlflow_port), (mlflow, pipeline, ns, 22),
              (push, stranger, ns, push_port), (push, prometheus, ns, push_port),
              (trainer, pipeline, ns, 29500), (trainer, stranger, ns, metrics_port),
              (trainer, prometheus, "monitoring", 29500), (stranger, stranger, ns, 8080)]
    for dst, src, src_ns, port in allowed:
        assert ingress_allowed(docs, dst, src, src_ns, port), f"{src} in {src_ns} -> {dst}:{port} should be allowed"
        if src_ns == ns:  # the source's own egress policies must let it out too
            assert egress_allowed(docs, src, dst, ns, port), f"{src} -> {dst}:{port}: egress should be allowed"
    for dst, src, src_ns, port in denied:
        assert not ingress_allowed(docs, dst, src, src_ns, port), f"{src} in {src_ns} -> {dst}:{port} should be denied"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_is_denied_except_what_each_pod_needs(overlay):
    docs = render(overlay)
    ns = CFG.cluster.namespace
    mlflow, push = {"app.kubernetes.io/name": "mlflow", "app.kubernetes.io/component": "tracking"}, \
        {"app.kubernetes.io/name": "pushgateway", "app.kubernetes.io/component": "monitoring"}
    trainer = {"app.kubernetes.io/component": "trainer"}
    pipeline = {"app.kubernetes.io/component": "pipeline"}
    kfp_task = {"pipelines.kubeflow.org/v2_component": "true"}
    dns, minio = {"k8s-app": "kube-dns"}, {"app": "minio"}
    stranger = {"app": "something-else"}
    for pod in (mlflow, push, trainer, pipeline, kfp_task, stranger):  # every pod resolves names
        assert egress_allowed(docs, pod, dns, "kube-system", 53, "UDP"), pod
        assert egress_allowed(docs, pod, dns, "kube-system", 53, "TCP"), pod
    allowed = [(trainer, trainer, ns, 45123), (trainer, mlflow, ns, 5000), (trainer, EXTERNAL, None, 443),
               (trainer, minio, "kubeflow", 9000), (pipeline, mlflow, ns, 5000), (pipeline, push, ns, 9091),
               (pipeline, EXTERNAL, None, 443), (kfp_task, mlflow, ns, 5000), (kfp_task, push, ns, 9091),
               (kfp_task, EXTERNAL, None, 443), (kfp_task, EXTERNAL, None, 6443),
               (kfp_task, {"app": "ml-pipeline"}, "kubeflow", 8887), (kfp_task, minio, "kubeflow", 9000),
               (mlflow, EXTERNAL, None, 443), (mlflow, minio, "kubeflow", 9000)]
    denied = [(push, EXTERNAL, None, 443), (push, mlflow, ns, 5000), (stranger, EXTERNAL, None, 443),
              (stranger, mlflow, ns, 5000), (trainer, EXTERNAL, None, 22), (trainer, EXTERNAL, None, 6443),
              (mlflow, EXTERNAL, None, 80), (trainer, {"app": "ml-pipeline"}, "kubeflow", 8888),
              (trainer, dns, "kube-system", 8080), (kfp_task, stranger, "other", 9000)]
    for src, dst, dst_ns, port in allowed:
        assert egress_allowed(docs, src, dst, dst_ns, port), f"{src} -> {dst} in {dst_ns}:{port} should be allowed"
    for src, dst, dst_ns, port in denied:
        assert not egress_allowed(docs, src, dst, dst_ns, port), f"{src} -> {dst} in {dst_ns}:{port} should be denied"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_podmonitor_scrapes_the_trainer_metrics_port(overlay):
    monitor = by_kind(render(overlay), "PodMonitor")["videossl-trainer"]["spec"]
    assert selector_matches(monitor["selector"], {"app.kubernetes.io/component": "trainer"})
    # by number: TrainJob pods cannot name their ports (no such field in trainer.kubeflow.org/v1alpha1)
    assert [e["portNumber"] for e in monitor["podMetricsEndpoints"]] == [CFG.pretrain.metrics_port]
    pushgateway = by_kind(render(overlay), "PodMonitor")["videossl-pushgateway"]["spec"]["podMetricsEndpoints"][0]
    assert pushgateway["honorLabels"] is True  # keep the job/instance labels the batch steps pushed
