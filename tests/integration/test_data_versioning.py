"""DVC-versioned ingest data on S3: push a real ingest output from a scratch git repo to a DVC remote on
a loopback S3 server, resolve it back by git revision (with no DVC cache, as a pod would), read the
shards from S3 and check the dataset is the same one (its digest), revision by revision.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from videossl import storage
from videossl.data import shards
from videossl.data.versioning import VersioningError, output_uri, push_data, resolve_data

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr or proc.stdout}"
    return proc.stdout


def _dvc(cwd: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _commit(repo: Path, message: str) -> None:
    _dvc(repo, "commit", "--force", "--quiet", "ingest")
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "--quiet", "-m", message], repo)


def _drop_a_video(data: Path) -> str:
    """A second dataset version: one source video fewer (manifest and stats rewritten); its digest."""
    rows = shards.read_manifest(data)
    gone = rows[-1]["source_id"]
    digest = shards.write_manifest(data, [r for r in rows if r["source_id"] != gone])
    stats = json.loads((data / "ingest.json").read_text())
    (data / "ingest.json").write_text(json.dumps({**stats, "digest": digest}, indent=2) + "\n")
    return digest


@pytest.fixture()
def dvc_env(monkeypatch, tmp_path, s3_server):
    # s3fs (DVC's S3 client) refuses AWS_CONFIG_FILE=/dev/null, which the S3 fixture sets; an empty
    # file keeps a developer's ~/.aws out just as well
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)  # what the videossl-s3 Secret gives a pod
    return s3_server


@pytest.fixture()
def data_repo(tmp_path, tiny_data) -> Path:
    """A scratch project: git + DVC, the ingest stage's outputs exactly as this repo's dvc.yaml declares
    them, holding the tiny dataset (made by the real ingest step)."""
    repo = tmp_path / "project"
    repo.mkdir()
    _run(["git", "init", "--quiet", "--initial-branch=main"], repo)
    _run(["git", "config", "user.email", "tests@videossl.invalid"], repo)
    _run(["git", "config", "user.name", "videossl tests"], repo)
    _dvc(repo, "init", "--quiet")
    shutil.copytree(tiny_data, repo / "data" / "ingest")
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["ingest"]
    stage = {k: v for k, v in stage.items() if k in ("cmd", "outs", "metrics")}  # no code deps out here
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ingest": stage}}, sort_keys=False))
    for out in stage["outs"]:
        out = out if isinstance(out, str) else next(iter(out))  # `path: {cache: false}` entries
        assert (repo / out).exists(), out
    _commit(repo, "data v1")
    return repo


def test_a_data_version_resolves_to_the_dataset_pushed_at_that_revision(tmp_path, dvc_env, data_repo, tiny_data):
    s3 = dvc_env
    bucket = s3.make_bucket("versioned-data")
    remote = f"s3://{bucket}/dvc"
    v1_digest = json.loads((tiny_data / "ingest.json").read_text())["digest"]

    rev1 = push_data(data_repo, remote)
    v2_digest = _drop_a_video(data_repo / "data" / "ingest")
    _dvc(data_repo, "commit", "--force", "--quiet", "ingest")
    with pytest.raises(VersioningError, match="commit the DVC files first"):  # data must belong to a revision
        push_data(data_repo, remote)
    _commit(data_repo, "data v2")
    rev2 = push_data(data_repo, remote)
    assert rev1 != rev2 and v1_digest != v2_digest
    # what a pod has: no DVC cache, only the revision, the repository and the remote
    shutil.rmtree(data_repo / ".dvc" / "cache")

    for rev, digest in ((rev1, v1_digest), (rev2, v2_digest)):
        dest = f"s3://{bucket}/runs/ingest/{rev[:12]}"
        assert resolve_data(rev, str(data_repo), remote, dest) == dest
        manifest = storage.read_complete(dest)
        # shards are not copied: the manifest points at DVC's content-addressed objects ...
        for rel, entry in manifest.items():
            if rel.startswith("shards/"):
                assert entry["uri"].startswith(f"{remote}/files/md5/{entry['md5'][:2]}/"), entry
        # ... and only the files git holds (ingest.json) are stored next to it
        stored = {o.uri[len(dest) + 1:] for o in storage.list_s3(dest + "/")}
        assert stored == {storage.COMPLETE} | {r for r, e in manifest.items() if "uri" not in e}
        assert "ingest.json" in stored

        local = storage.download_dir(dest, tmp_path / "read" / rev[:12])
        rows = shards.read_manifest(local)
        assert json.loads((local / "ingest.json").read_text())["digest"] == digest
        assert shards.manifest_digest(rows) == digest
        # the frames themselves: every clip's content digest, recomputed from the shards read back
        store = shards.ClipStore(local)
        for row in rows[:: max(1, len(rows) // 8)]:
            frames = np.load(local / shards.SHARDS / row["shard"], mmap_mode="r")
            clip = frames[row["offset"] + row["start"]: row["offset"] + row["start"] + store.clip_frames]
            assert shards.clip_digest(clip) == row["digest"]


def test_the_ingest_component_uses_a_data_version_instead_of_ingesting(tmp_path, dvc_env, data_repo, tiny_cfg):
    from kfp import dsl

    from components.ingest import ingest  # the component's function, as its pod runs it
    from pipelines.videossl_pipeline import params_text
    from videossl.artifact_locations import location
    from videossl.step_params import split

    bucket = dvc_env.make_bucket("versioned-data")
    remote = f"s3://{bucket}/dvc-component"
    rev = push_data(data_repo, remote)
    cfg = tiny_cfg.model_copy(update={"cluster": tiny_cfg.cluster.model_copy(
        update={"data_remote": remote, "data_repo": str(data_repo)})})
    root = f"s3://{bucket}/runs"

    share = split(params_text(cfg))["ingest"]
    data = dsl.Dataset(uri=str(tmp_path / "kfp" / "data"))
    ingest(params=share, root=root, data_version=rev, image=cfg.cluster.image, data=data)
    data_uri = location(data)
    assert data_uri == output_uri(root, "ingest", share, cfg.cluster.image, rev)  # params- and version-addressed
    assert data.metadata["data_version"] == rev
    local = storage.download_dir(data_uri, tmp_path / "data")
    want = json.loads((data_repo / "data" / "ingest" / "ingest.json").read_text())["digest"]
    assert shards.manifest_digest(shards.read_manifest(local)) == want


def test_unpushed_or_unknown_versions_fail_naming_what_to_fix(tmp_path, dvc_env, data_repo):
    bucket = dvc_env.make_bucket("versioned-data")
    remote = f"s3://{bucket}/never-pushed"
    shutil.rmtree(data_repo / ".dvc" / "cache")  # as in a pod: the .dir listings must come from the remote
    with pytest.raises(VersioningError, match=r"(?s)cannot list data/ingest at revision 'HEAD'.*push-data"):
        resolve_data("HEAD", str(data_repo), remote, f"s3://{bucket}/runs/x")
    with pytest.raises(VersioningError, match=r"revision 'no-such-tag'"):
        resolve_data("no-such-tag", str(data_repo), remote, f"s3://{bucket}/runs/y")
    with pytest.raises(VersioningError, match=r"cluster\.data_repo is not set"):
        resolve_data("HEAD", None, remote, f"s3://{bucket}/runs/z")
