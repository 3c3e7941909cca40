"""Which data a pipeline run reads and where its outputs go.

- **DVC-versioned data.** `dvc repro` + `push_data` put the ingest stage's outputs in the DVC
  remote on S3 (`cluster.data_remote`); a git revision (`cluster.data_version`) then names that data
  for good. `resolve_data` turns a revision into a folder a step can read, without `dvc repro`,
  without a checkout and without copying the shards: DVC stores each file content-addressed
  (`<remote>/files/md5/ab/cdef...`, a directory as a `.dir` listing), so the resolved folder is a
  `_COMPLETE` manifest (see videossl.storage) whose entries point at those objects, plus the small
  files git holds itself (`ingest.json`, a DVC metric with `cache: false`). `storage.download_dir`
  reads it like any other folder and checks every file's md5 on the way.
- **Params-addressed outputs.** `output_uri(root, step, params, *inputs)` is a location derived from
  everything the step's result depends on (its params text and its input locations), so only runs
  with the same inputs ever write there. That makes a KFP cache hit safe: the location it hands back
  holds what these inputs produce, never files that a run with other params overwrote later.
"""
from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from pathlib import Path, PurePosixPath

from videossl import storage
from videossl.errors import StepError
from videossl.stages import STAGES

log = logging.getLogger(__name__)

DATA_PATH = STAGES["ingest"].out  # what dvc.yaml's ingest stage writes (its outs, and ingest.json)
DVC_REMOTE = "videossl-data"      # the remote name push_data configures (in .dvc/config.local)


class VersioningError(StepError):
    pass


def output_uri(root: str, step: str, params: str, *inputs: str) -> str:
    """`{root}/{STAGES[step].out}/{key}`, key = a hash of the step name, its params text (`dump_config`: one
    text per config, however it was written) and its input locations."""
    h = hashlib.sha256("\0".join([step, params, *inputs]).encode())
    return f"{str(root).rstrip('/')}/{STAGES[step].out}/{h.hexdigest()[:16]}"


def _dvc_config(remote: str, endpoint_url: str | None) -> dict:
    # Named here, not read from the repo: pods resolve against cluster.data_remote whatever remote
    # the revision's .dvc/config names (often none: remotes with credentials live in config.local).
    opts = {"url": remote, **({"endpointurl": endpoint_url} if endpoint_url else {})}
    return {"core": {"remote": DVC_REMOTE}, "remote": {DVC_REMOTE: opts}}


def resolve_data(rev: str, repo: str | None, remote: str, dest: str, path: str = DATA_PATH,
                 endpoint_url: str | None = None) -> str:
    """Publish, at the s3:// folder `dest`, the manifest of the DVC-tracked `path` at git revision
    `rev` of `repo` (a git URL or a local clone); returns `dest`.

    DVC-cached files become references to their content-addressed objects in `remote`; files git
    holds (ingest.json) are copied under `dest`. Only DVC's file listing is read (the `.dir` objects
    come from `remote`), nothing is downloaded here.
    """
    from dvc.api import DVCFileSystem

    if not repo:
        raise VersioningError(f"data version {rev!r} given but cluster.data_repo is not set: it must name the "
                              "git repository (URL) whose dvc.lock records that data")
    if not storage.is_s3(dest) or not storage.is_s3(remote):
        raise VersioningError(f"a data version resolves to s3:// only: cluster.data_remote is {remote!r}, the "
                              f"run's root gives {dest!r}")
    endpoint_url = storage.endpoint(endpoint_url)
    try:
        fs = DVCFileSystem(repo, rev=rev, config=_dvc_config(remote, endpoint_url))
        listing = fs.find(path, detail=True)
    except Exception as e:  # scmrepo/dvc raise many types: unknown rev, no .dir in the remote, no repo
        raise VersioningError(f"cannot list {path} at revision {rev!r} of {repo} with DVC remote {remote} "
                              f"(cluster.data_version / cluster.data_repo / cluster.data_remote; was the data "
                              f"pushed? `videossl pipeline push-data`): {type(e).__name__}: {e}") from e
    if not listing:
        raise VersioningError(f"{path} does not exist at revision {rev!r} of {repo} (cluster.data_version)")

    files = {}
    remote = remote.rstrip("/")
    for name, info in sorted(listing.items()):
        rel = PurePosixPath(name).relative_to(path).as_posix()
        if PurePosixPath(rel).name == ".gitignore":  # DVC's own bookkeeping, not data
            continue
        md5 = info.get("md5") if (info.get("dvc_info") or {}).get("isout") else None
        if md5:  # DVC 3 remote layout: files/md5/<first 2 hex>/<rest>
            files[rel] = {"md5": md5, "size": info.get("size"), "uri": f"{remote}/files/md5/{md5[:2]}/{md5[2:]}"}
        else:
            data = fs.read_bytes(name)
            storage.write_bytes(storage.join(dest, rel), data, endpoint_url)
            files[rel] = {"md5": hashlib.md5(data, usedforsecurity=False).hexdigest(), "size": len(data)}
    storage.verify_objects(dest, files, endpoint_url)
    storage.write_complete(dest, files, endpoint_url)
    log.info("data version %s of %s: %d files -> %s", rev, repo, len(files), dest)
    return dest


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VersioningError(f"`{' '.join(cmd)}` failed in {cwd} (exit {proc.returncode}):\n"
                              f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def push_data(repo: str | Path, remote: str, targets: tuple[str, ...] = ("ingest",),
              endpoint_url: str | None = None) -> str:
    """`dvc push` the ingest stage's outputs of the checkout `repo` to `remote` (cluster.data_remote);
    returns the git commit that records them: the value for cluster.data_version.

    Refuses when dvc.lock (or a .dvc file) has uncommitted changes: the pushed data would then
    belong to no revision.
    """
    repo = Path(repo)
    dirty = [line for line in _run(["git", "status", "--porcelain"], repo).splitlines()
             if line[3:].endswith(("dvc.lock", ".dvc", "dvc.yaml")) or line[3:].startswith(DATA_PATH)]
    if dirty:
        raise VersioningError("commit the DVC files first; a data version is a git revision:\n  " + "\n  ".join(dirty))
    dvc = [sys.executable, "-m", "dvc"]
    # --local: the remote (and its endpoint) stay out of git, like the credentials
    _run(dvc + ["remote", "add", "--local", "--force", DVC_REMOTE, remote], repo)
    endpoint_url = storage.endpoint(endpoint_url)
    if endpoint_url:
        _run(dvc + ["remote", "modify", "--local", DVC_REMOTE, "endpointurl", endpoint_url], repo)
    _run(dvc + ["push", "--remote", DVC_REMOTE, *targets], repo)
    return _run(["git", "rev-parse", "HEAD"], repo).strip()
