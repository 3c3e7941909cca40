"""The compiled KFP IR: tasks, data edges, images, resources, caching and determinism."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videossl.pipeline_runs import compile_pipeline
from videossl.config import parse_config

REPO = Path(__file__).resolve().parents[2]
TASKS = {"ingest", "pretrain", "probe-eval", "register"}
STEP_OF_TASK = {"ingest": "ingest", "pretrain": "pretrain", "probe-eval": "probe_eval", "register": "register"}

# ----------------------------------------------------------------------------------------------
# compile


@pytest.fixture(scope="module")
def cfg():
    return parse_config((REPO / "params.yaml").read_text())


@pytest.fixture(scope="module")
def ir(tmp_path_factory, cfg) -> dict:
    path = compile_pipeline(cfg, tmp_path_factory.mktemp("ir") / "pipeline.yaml")
    return next(yaml.safe_load_all(Path(path).read_text()))  # the pipeline spec (then the platform spec)


def _executor(ir: dict, task: str) -> dict:
    label = ir["components"][ir["root"]["dag"]["tasks"][task]["componentRef"]["name"]]["executorLabel"]
    return ir["deploymentSpec"]["executors"][label]["container"]


def test_every_pipeline_and_component_parameter_is_described_in_the_ir(ir):
    # what the KFP UI shows beside each input and output: from the functions' Args/Returns sections
    described = {"pipeline": ir["root"]["inputDefinitions"]}
    described.update({name: c.get(k, {}) for name, c in ir["components"].items()
                      for k in ("inputDefinitions", "outputDefinitions")})
    undocumented = [(owner, kind, param) for owner, spec in described.items() for kind in ("parameters", "artifacts")
                    for param, d in spec.get(kind, {}).items() if not d.get("description", "").strip()]
    assert not undocumented, undocumented
    assert ir["pipelineInfo"]["description"].startswith("Raw video -> clip shards")


def test_ir_has_the_four_steps_chained_by_their_output_locations(ir):
    tasks = ir["root"]["dag"]["tasks"]
    assert set(tasks) == TASKS
    assert set(ir["root"]["inputDefinitions"]["parameters"]) == {"params", "root", "data_version"}

    deps = {name: set(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps == {"ingest": set(), "pretrain": {"ingest"}, "probe-eval": {"ingest", "pretrain"},
                    "register": {"ingest", "pretrain", "probe-eval"}}

    def source(task: str, param: str) -> tuple[str, str]:
        p = tasks[task]["inputs"]["parameters"][param]["taskOutputParameter"]
        return p["producerTask"], p["outputParameterKey"]

    # Every edge is a data dependency: the consumer reads the producer's returned location.
    assert source("pretrain", "data_uri") == ("ingest", "data_uri")
    assert source("probe-eval", "data_uri") == ("ingest", "data_uri")
    assert source("probe-eval", "model_uri") == ("pretrain", "model_uri")
    assert source("register", "data_uri") == ("ingest", "data_uri")
    assert source("register", "model_uri") == ("pretrain", "model_uri")
    assert source("register", "eval_uri") == ("probe-eval", "eval_uri")

    for name, task in tasks.items():
        params = task["inputs"]["parameters"]
        assert params["params"] == {"componentInputParameter": "params"}
        # each component derives its params-addressed output folder from the run's root itself
        assert params["root"] == {"componentInputParameter": "root"}
        assert "out_uri" not in params
    assert tasks["ingest"]["inputs"]["parameters"]["data_version"] == {"componentInputParameter": "data_version"}


def test_ir_images_resources_caching_and_small_outputs(ir, cfg):
    tasks = ir["root"]["dag"]["tasks"]
    for name in TASKS:
        c = _executor(ir, name)
        assert c["image"] == cfg.cluster.image
        command = "\n".join(c["command"])
        # the image has the package: no runtime pip install (neither packages_to_install nor kfp)
        assert "pip install" not in command
        # thin wrapper: the body parses params and calls the one step function
        step = STEP_OF_TASK[name]
        assert "from videossl.config import dump_config, parse_config" in command
        assert f"from videossl.steps.{step} import {step} as step" in command
        res = c["resources"]
        assert {"resourceCpuLimit", "resourceMemoryLimit"} <= set(res), name

    for name in TASKS:  # request = limit = cluster.resources.<step> (the default launcher is trainjob)
        res, want = _executor(ir, name)["resources"], cfg.cluster.resources[STEP_OF_TASK[name]]
        assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == want.cpu
        assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == want.memory

    assert tasks["ingest"]["cachingOptions"].get("enableCache") is True
    # register writes to the registry: never served from cache (proto3 omits false, so absent == off)
    assert tasks["register"]["cachingOptions"].get("enableCache", False) is False

    comps = ir["components"]
    artifacts = lambda task: {k: v["artifactType"]["schemaTitle"]  # noqa: E731
                              for k, v in comps[tasks[task]["componentRef"]["name"]]["outputDefinitions"]
                              .get("artifacts", {}).items()}
    assert artifacts("probe-eval") == {"scores": "system.Metrics", "report": "system.Markdown"}
    assert artifacts("register") == {"model_card": "system.Markdown"}
    assert artifacts("ingest") == {} and artifacts("pretrain") == {}  # large data never is an artifact
    # the run's own outputs, shown on the run page
    outs = ir["root"]["dag"]["outputs"]
    assert set(outs["artifacts"]) == {"scores", "report", "model_card"}
    assert set(outs["parameters"]) == {"model_version", "data_uri", "model_uri", "eval_uri", "register_uri"}


def test_compile_is_deterministic(tmp_path, cfg):
    a = Path(compile_pipeline(cfg, tmp_path / "a.yaml")).read_bytes()
    b = Path(compile_pipeline(cfg, tmp_path / "b" / "b.yaml")).read_bytes()
    assert a == b
    # and in a fresh interpreter (another hash seed), through the CLI, from another working directory
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-m", "videossl.cli", "pipeline", "compile", "--params",
                           str(REPO / "params.yaml"), "--out", "c.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.yaml").read_bytes() == a


