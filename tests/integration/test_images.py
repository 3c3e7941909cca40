"""Images pinned by digest, against a real registry: Debian's docker-registry (the CNCF distribution
registry) on loopback, an image pushed to it through the registry API, `videossl pin-images` asking it
what the tags name. The compiled pipeline, the rendered training job and the kustomize overlay then
run the pushed bytes; with cluster.require_digests a tag is refused before any work, naming the key;
a tag moved to other bytes is pinned again to them."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from tests.servers import debian_binary, free_port
from tests.tiny import REPO, tiny_params_yaml
from videossl.cli import main
from videossl.cluster.images import ImageError, digest_of, is_pinned
from videossl.config import ConfigError, load_config

STARTUP_S = 60  # a generous bound on a loaded machine: the registry answers /v2/ long before
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    (root / "config.yml").write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "warn"}, "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    proc = subprocess.Popen([debian_binary("docker-registry"), "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "docker-registry did not start"
            time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def _push(host: str, repo: str, tag: str, layer: bytes) -> str:
    """An OCI image (a config and one layer) uploaded through the registry API; its manifest digest."""
    def blob(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST")
        with urllib.request.urlopen(start) as resp:
            location = resp.headers["Location"]
        url = location if location.startswith("http") else f"http://{host}{location}"
        put = urllib.request.Request(f"{url}{'&' if '?' in url else '?'}digest={digest}", data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(put).close()
        return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len(data)}

    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                           "layers": [blob(layer)]}).encode()
    put = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", data=manifest, method="PUT",
                                 headers={"Content-Type": OCI_MANIFEST})
    with urllib.request.urlopen(put) as resp:
        assert resp.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()
        return resp.headers["Docker-Content-Digest"]


def test_pinned_images_name_the_pushed_bytes_everywhere_they_run(registry, tmp_path, capsys):
    pipeline = _push(registry, "videossl/pipeline", "0.1.0", b"pipeline layer")
    trainer = _push(registry, "videossl/trainer", "0.1.0-cuda12.8", b"trainer layer")
    params = tmp_path / "params.yaml"
    text = tiny_params_yaml(tmp_path, f"cluster.image={registry}/videossl/pipeline:0.1.0",
                            f"cluster.trainer_image={registry}/videossl/trainer:0.1.0-cuda12.8")
    line = f"  image: {registry}/videossl/pipeline:0.1.0\n"
    assert line in text
    params.write_text(text.replace(line, line[:-1] + "   # the CPU image\n"))
    with pytest.raises(ConfigError, match=r"cluster.image.*is a tag, and cluster.require_digests is on"):
        load_config(params, ["cluster.require_digests=true"])  # refused before any work, naming the key
    overlay = tmp_path / "overlay"
    shutil.copytree(REPO / "k8s/overlays/prod", overlay)
    kustomization = (overlay / "kustomization.yaml").read_text()
    (overlay / "kustomization.yaml").write_text(
        kustomization.replace("- name: ghcr.io/videossl/pipeline\n", f"- name: ghcr.io/videossl/pipeline\n    newName: {registry}/videossl/pipeline\n")
        .replace("  - name: prom/pushgateway\n    newTag: v1.11.1\n", ""))

    assert main(["pin-images", "--params", str(params), "--overlay", str(overlay)]) == 0
    assert f"pinned cluster.image -> {registry}/videossl/pipeline:0.1.0@{pipeline}" in capsys.readouterr().out
    cfg = load_config(params, ["cluster.require_digests=true"])  # now accepted
    assert cfg.cluster.image == f"{registry}/videossl/pipeline:0.1.0@{pipeline}"
    assert cfg.cluster.trainer_image == f"{registry}/videossl/trainer:0.1.0-cuda12.8@{trainer}"
    assert "   # the CPU image" in params.read_text()  # the file's comments are kept
    images = yaml.safe_load((overlay / "kustomization.yaml").read_text())["images"]
    assert images == [{"name": "ghcr.io/videossl/pipeline", "newName": f"{registry}/videossl/pipeline",
                       "newTag": "0.1.0", "digest": pipeline}]

    from videossl.cluster.jobs import render_job
    from videossl.pipeline_runs import compile_pipeline

    job = json.dumps(render_job(cfg, "s3://videossl/data", "s3://videossl/out"))
    assert f"{registry}/videossl/trainer:0.1.0-cuda12.8@{trainer}" in job
    compiled = (tmp_path / "pipeline.yaml")
    compile_pipeline(cfg, compiled)
    spec = next(yaml.safe_load_all(compiled.read_text()))  # the pipeline spec (then the platform spec)
    refs = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert refs == {f"{registry}/videossl/pipeline:0.1.0@{pipeline}"}

    # the tag moves to other bytes: pinning again follows it; what was pinned still names the old bytes
    moved = _push(registry, "videossl/pipeline", "0.1.0", b"a rebuilt pipeline layer")
    assert moved != pipeline and digest_of(cfg.cluster.image) == moved
    assert main(["pin-images", "--params", str(params)]) == 0
    assert load_config(params, []).cluster.image == f"{registry}/videossl/pipeline:0.1.0@{moved}"
    assert is_pinned(load_config(params, []).cluster.trainer_image)


def test_a_missing_tag_or_registry_is_one_clear_line(registry):
    with pytest.raises(ImageError, match=r"videossl/pipeline:9.9.9: http://.*/manifests/9.9.9 answered 404"):
        digest_of(f"{registry}/videossl/pipeline:9.9.9")
    with pytest.raises(ImageError, match="cannot reach"):
        digest_of(f"127.0.0.1:{free_port()}/videossl/pipeline:0.1.0")
