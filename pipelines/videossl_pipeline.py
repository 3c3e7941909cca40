"""The videossl KFP pipeline: ingest -> pretrain -> probe_eval -> register.

Every edge carries a location (a path now, an s3:// URI on the cluster), never the data itself; the
components are thin wrappers over `videossl.steps`. Two entry points, both used by `videossl pipeline`:

- `compile_pipeline(out_path)`: the IR YAML for `kfp run create` (deterministic: same code, same bytes).
- `run_local(cfg, root)`: the whole DAG through `kfp.local`'s SubprocessRunner, in this Python
  environment, no Docker.
"""
# No `from __future__ import annotations` here: KFP reads the pipeline signature's annotations as
# objects, and a string "str" is taken for an artifact type.
import contextlib
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Markdown, Metrics

from components.ingest import ingest
from components.pretrain import pretrain
from components.probe_eval import probe_eval
from components.register import register
from videossl.errors import StepError

PIPELINE_NAME = "videossl"
PipelineOutputs = NamedTuple(
    "Outputs", [("model_version", str), ("scores", Metrics), ("report", Markdown), ("model_card", Markdown)])

# Where each step writes, relative to the run's root. The only place that maps steps to locations:
# the s3:// version on the cluster is the same layout under an s3:// root. Caveat for KFP caching:
# these are fixed per root, so a cache hit hands back a location that a later run with other
# params (same root) may have overwritten; a run-scoped or params-addressed root avoids that.
LAYOUT = {
    "ingest": "data/ingest",
    "pretrain": "outputs/pretrain",
    "probe_eval": "outputs/eval",
    "register": "outputs/register",
}

# Per-task resources (KFP limits/requests; ignored by kfp.local). Pretraining is the heavy one.
RESOURCES = {
    "ingest": {"cpu": "2", "memory": "4G"},
    "pretrain": {"cpu": "8", "memory": "16G"},
    "probe_eval": {"cpu": "4", "memory": "8G"},
    "register": {"cpu": "1", "memory": "2G"},
}


class LocalRunError(StepError):
    """A task of the local run failed (the CLI prints this and exits 1)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours task names in its messages


def locations(root) -> dict[str, str]:
    """Output location of every step under `root`: a plain string (run_local, tests) or the
    pipeline's `root` parameter (then each value is a runtime f-string placeholder)."""
    base = root.rstrip("/") if isinstance(root, str) else root
    return {step: f"{base}/{rel}" for step, rel in LAYOUT.items()}


def _resources(task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
    r = RESOURCES[step]
    return (task.set_cpu_request(r["cpu"]).set_cpu_limit(r["cpu"])
            .set_memory_request(r["memory"]).set_memory_limit(r["memory"]))


@dsl.pipeline(name=PIPELINE_NAME,
              description="Raw video -> clip shards -> video-native SSL encoder (+ bag-of-frames baseline) "
                          "-> temporal benchmark -> MLflow registry (champion/challenger gate).")
def videossl_pipeline(params: str, root: str) -> PipelineOutputs:
    """`params`: the params.yaml text (validated by every step); `root`: where data and outputs go.
    The run's outputs are the small results: the registered version, the scores, report and card."""
    loc = locations(root)

    data = ingest(params=params, out_uri=loc["ingest"])
    # Same params + same sources -> same shards (ingest is deterministic), so a rerun may reuse them.
    data.set_caching_options(True)
    _resources(data, "ingest")

    model = pretrain(params=params, data_uri=data.outputs["data_uri"], out_uri=loc["pretrain"])
    # Deterministic given params and dataset; the most expensive step is worth reusing on a rerun.
    model.set_caching_options(True)
    _resources(model, "pretrain")

    scores = probe_eval(params=params, data_uri=data.outputs["data_uri"], model_uri=model.outputs["model_uri"],
                        out_uri=loc["probe_eval"])
    scores.set_caching_options(True)
    _resources(scores, "probe_eval")

    reg = register(params=params, data_uri=data.outputs["data_uri"], model_uri=model.outputs["model_uri"],
                   eval_uri=scores.outputs["eval_uri"], out_uri=loc["register"])
    # Never cached: registering writes to the MLflow registry (a new version, the champion alias).
    # A cache hit would report an old version as this run's and skip the gate against today's champion.
    reg.set_caching_options(False)
    _resources(reg, "register")

    return PipelineOutputs(model_version=reg.outputs["model_version"], scores=scores.outputs["scores"],
                           report=scores.outputs["report"], model_card=reg.outputs["model_card"])


def compile_pipeline(out_path: str | os.PathLike) -> str:
    """Write the pipeline's IR YAML to `out_path`; returns the path."""
    out = Path(out_path)
    if out.parent != Path("."):
        out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline_func=videossl_pipeline, package_path=str(out))
    return str(out)


def run_local(cfg, root: str | os.PathLike) -> dict:
    """Run the whole DAG with kfp.local's SubprocessRunner in this interpreter's environment.

    Every task runs as `sys.executable -m kfp.dsl.executor_main ...` with this process's environment,
    so the venv's `videossl` is importable there (and in torchrun, which the pretrain step launches
    as `sys.executable -m torch.distributed.run`). Locally every task runs (no KFP cache): the
    locations under `root` are fixed, so a cache hit could hand back another run's files.
    Returns the output locations, the headline scores and the registered version.
    """
    from kfp import local

    from videossl.config import dump_config

    root_abs = Path(root).resolve()
    root_abs.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root_abs / "kfp-root"))
    with _videossl_importable_in_tasks(), warnings.catch_warnings():
        # Locally, base_image and the resource settings are ignored; kfp.local warns about both per task.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            run = videossl_pipeline(params=dump_config(cfg), root=str(root_abs))
        except RuntimeError as e:  # kfp.local: "Pipeline 'videossl' finished with status FAILURE. Inner task ..."
            raise LocalRunError(f"{_ANSI.sub('', str(e))} The failed task's log is above; outputs so far are "
                                f"under {root_abs}.") from e

    out = run.outputs
    loc = locations(str(root_abs))
    reg = json.loads((Path(loc["register"]) / "registration.json").read_text())
    headline = {"video", "frames", "random_init", "pixels", "chance"}
    return {
        "root": str(root_abs),
        "locations": loc,
        # the Metrics output (what the KFP UI shows); the full table is in locations.probe_eval/metrics.json
        "scores": {k: v for k, v in sorted(out["scores"].metadata.items()) if k.rsplit(".", 1)[-1] in headline},
        "registered": {"model_version": out["model_version"],
                       **{k: reg.get(k) for k in ("model_name", "version", "aliases", "promoted", "reason",
                                                  "model_uri", "dataset_digest")}},
        "kfp_outputs": {name: out[name].uri for name in ("scores", "report", "model_card")},
    }


@contextlib.contextmanager
def _videossl_importable_in_tasks():
    """Tasks run with sys.executable and this process's environment. An installed (or editable)
    videossl is found there already; when this process found it another way (sys.path edits), put
    its folder on PYTHONPATH for the duration of the run."""
    probe = [sys.executable, "-c",
             "import importlib.util, sys; sys.exit(importlib.util.find_spec('videossl') is None)"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        yield
        return
    import videossl

    where = str(Path(videossl.__file__).resolve().parent.parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([where, *filter(None, (old or "").split(os.pathsep))])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
