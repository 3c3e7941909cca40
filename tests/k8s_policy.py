"""The pod policy every workload videossl puts on a cluster follows (the kustomize output, the
rendered pretraining jobs, the compiled pipeline's task pods), and the strict schema form.

The policy: the Pod Security Standard "restricted" (non-root, no privilege escalation, all
capabilities dropped, RuntimeDefault seccomp, no host namespaces, only the allowed volume types: the
namespace enforces it, k8s/base/namespace.yaml), plus requests and limits, a read-only root
filesystem (or a per-container justification annotation), pinned images and a named service account
wherever an API token is mounted.
"""
from __future__ import annotations

# The only accepted reason for a writable root filesystem: this annotation on the pod template, keyed
# by container name, whose value says why (e.g. "writable-rootfs.videossl.io/foo: tool X writes into /opt").
WRITABLE_ROOTFS_PREFIX = "writable-rootfs.videossl.io/"
# Pod Security Standards, "restricted": the only volume types a pod may use.
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}


def strict(schema):
    """The schema with `additionalProperties: false` on every object that lists properties (as
    kubernetes-validate --strict does), so a misspelt field fails instead of being pruned silently."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def pod_template(obj: dict) -> tuple[dict, dict]:
    """(metadata, spec) of the pods a workload makes."""
    if obj["kind"] == "Pod":
        return obj["metadata"], obj["spec"]
    template = obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else obj["spec"]["template"]
    return template.get("metadata", {}), template["spec"]


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "has no tag"
    return "uses :latest" if last.rsplit(":", 1)[1] == "latest" else None


def policy_violations(obj: dict) -> list[str]:
    meta, spec = pod_template(obj)
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    pod_sc = spec.get("securityContext", {})
    annotations = meta.get("annotations", {})
    out = []
    if spec.get("automountServiceAccountToken") is not False and spec.get("serviceAccountName") in (None, "", "default"):
        out.append(f"{name}: mounts an API token without a named serviceAccountName "
                   "(name one, or set automountServiceAccountToken: false)")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(f"{name}: {flag}")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"{name}: volume {volume['name']} is {sorted(kinds)}, not a type the restricted standard allows")
    for c in spec.get("initContainers", []) + spec["containers"]:
        where = f"{name} container {c['name']}"
        sc = c.get("securityContext", {})
        resources = c.get("resources", {})
        out += [f"{where}: no {kind}.{res}" for kind in ("requests", "limits") for res in ("cpu", "memory")
                if res not in resources.get(kind, {})]
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            out.append(f"{where}: runAsNonRoot is not true")
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if type(uid) is not int or uid == 0:
            out.append(f"{where}: runAsUser {uid!r} is not a numeric non-root UID")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []) or capabilities.get("add"):
            out.append(f"{where}: capabilities must drop ALL and add none")
        if (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            out.append(f"{where}: seccompProfile is not RuntimeDefault")
        reason = annotations.get(WRITABLE_ROOTFS_PREFIX + c["name"], "")
        if sc.get("readOnlyRootFilesystem") is not True and len(reason.split()) < 3:
            out.append(f"{where}: readOnlyRootFilesystem is not true and no "
                       f"{WRITABLE_ROOTFS_PREFIX}{c['name']} annotation says why")
        if problem := image_problem(c.get("image", "")):
            out.append(f"{where}: image {c.get('image')!r} {problem}")
    return out
