"""Container images pinned by digest: `videossl pin-images` and the `cluster.require_digests` check.

A tag is a name that can be moved; a digest (`repo:tag@sha256:...`) names the bytes. `pin` asks the
image's registry (the Docker Registry HTTP API v2 that every registry speaks: ghcr.io, Docker Hub,
ECR, a local `docker-registry`) which manifest the tag names now, and returns the reference with its
digest: what the compiled pipeline, the rendered training jobs and the kustomize overlays then run.
A registry that asks for a token (a `WWW-Authenticate: Bearer` challenge, as ghcr.io and Docker Hub
do for public images) is answered with an anonymous one; a loopback registry is spoken to over
plain HTTP, as docker does for `localhost`.
"""
from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request

from videossl.errors import StepError

# repo[:tag]@sha256:<64 hex>: a reference that names its bytes
PINNED = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
# what a registry may answer a manifest request with: multi-platform indexes first (their digest names
# every platform's image), then single manifests, OCI and Docker
MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
DEFAULT_REGISTRY = "registry-1.docker.io"  # where a name without a registry host lives
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
TIMEOUT_S = 30


class ImageError(StepError):
    pass


def is_pinned(ref: str) -> bool:
    return bool(PINNED.match(ref))


def split(ref: str) -> tuple[str, str, str]:
    """`ghcr.io/videossl/pipeline:0.1.0` -> ("ghcr.io", "videossl/pipeline", "0.1.0"); a reference
    already pinned keeps its tag (its digest is asked again); no tag is `latest`."""
    name = ref.split("@", 1)[0]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = DEFAULT_REGISTRY, name if "/" in name else f"library/{name}"
    path, _, tag = path.partition(":")
    return host, path, tag or "latest"


def _scheme(host: str) -> str:
    """Plain HTTP to a loopback registry (with or without a port), TLS to every other."""
    return "http" if any(host == h or host.startswith(h + ":") for h in LOOPBACK) else "https"


def _anonymous_token(challenge: str) -> str:
    """A pull token for a `Bearer realm=...,service=...,scope=...` challenge, asked for without credentials."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", None)
    if realm is None:
        raise ImageError(f"the registry's challenge names no token realm: {challenge}")
    with urllib.request.urlopen(f"{realm}?{urllib.parse.urlencode(params)}", timeout=TIMEOUT_S) as resp:
        body = json.load(resp)
    return body.get("token") or body["access_token"]


def digest_of(ref: str) -> str:
    """The `sha256:...` digest of the manifest `ref`'s tag names in its registry now."""
    host, path, tag = split(ref)
    url = f"{_scheme(host)}://{host}/v2/{path}/manifests/{tag}"
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    for attempt in range(2):
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
                body = resp.read()
                # the registry's own digest of what it stored; computed from the bytes when it does not say
                return resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        except urllib.error.HTTPError as e:
            challenge = e.headers.get("WWW-Authenticate", "")
            if e.code == 401 and attempt == 0 and challenge.lower().startswith("bearer"):
                headers["Authorization"] = f"Bearer {_anonymous_token(challenge)}"
                continue
            raise ImageError(f"{ref}: {url} answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ImageError(f"{ref}: cannot reach {url} ({getattr(e, 'reason', e)})") from None
    raise ImageError(f"{ref}: {url} refused an anonymous token")


def pin(ref: str) -> str:
    """`ref` with the digest its tag names now: `repo:tag@sha256:...`."""
    return f"{ref.split('@', 1)[0]}@{digest_of(ref)}"


PARAMS_KEYS = ("image", "trainer_image")  # params.yaml's cluster.<key>: the pipeline's and the trainer's image
_CHILD = re.compile(r"^  (?P<key>\w+):(?P<gap>\s+)(?P<value>[^\s#]+)(?P<rest>.*)$")  # a direct key of a section
_OVERLAY_NAME = re.compile(r"^(?P<indent>\s*)- name:\s*(?P<name>\S+)\s*$")
_OVERLAY_FIELD = re.compile(r"^\s+(?P<key>newTag|newName|digest):\s*(?P<value>\S+)\s*$")


def pin_params(path, resolve=pin) -> dict[str, str]:
    """params.yaml's cluster.image and cluster.trainer_image pinned in place (comments and layout kept):
    {key: pinned reference}."""
    from pathlib import Path

    from videossl.storage import write_text_atomic

    lines, section, pinned = Path(path).read_text().splitlines(keepends=True), None, {}
    for i, line in enumerate(lines):
        if line[:1].strip() and not line.startswith("#"):  # a top-level key starts a section
            section = line.split(":", 1)[0]
        elif section == "cluster" and (m := _CHILD.match(line.rstrip("\n"))) and m["key"] in PARAMS_KEYS:
            pinned[m["key"]] = resolve(m["value"])
            lines[i] = f"  {m['key']}:{m['gap']}{pinned[m['key']]}{m['rest']}\n"
    missing = [k for k in PARAMS_KEYS if k not in pinned]
    if missing:
        raise ImageError(f"{path}: no cluster.{', cluster.'.join(missing)} line to pin (write it, then pin)")
    write_text_atomic(Path(path), "".join(lines))
    return pinned


def pin_overlay(folder, resolve=pin) -> dict[str, str]:
    """A kustomize overlay's `images:` pinned in place: each entry (name, newName, newTag) gets the
    `digest` its tag names now; kustomize then writes name@digest into every manifest it renders."""
    from pathlib import Path

    from videossl.storage import write_text_atomic

    path = Path(folder) / "kustomization.yaml"
    lines = path.read_text().splitlines(keepends=True)
    out, pinned, i, section = [], {}, 0, None
    while i < len(lines):
        if lines[i][:1].strip() and not lines[i].startswith("#"):  # a top-level key: images, replicas, ...
            section = lines[i].split(":", 1)[0]
        m = _OVERLAY_NAME.match(lines[i].rstrip("\n")) if section == "images" else None
        out.append(lines[i])
        i += 1
        if not m:
            continue
        fields, indent = {}, m["indent"] + "  "
        while i < len(lines) and (f := _OVERLAY_FIELD.match(lines[i].rstrip("\n"))):
            fields[f["key"]] = f["value"].strip("\"'")
            if f["key"] != "digest":  # a previous pin is replaced
                out.append(lines[i])
            i += 1
        ref = f"{fields.get('newName', m['name'])}:{fields.get('newTag', 'latest')}"
        pinned[m["name"]] = resolve(ref)
        out.append(f"{indent}digest: {pinned[m['name']].split('@', 1)[1]}\n")
    write_text_atomic(path, "".join(out))
    return pinned
