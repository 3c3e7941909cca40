"""The compiled KFP IR: tasks, data edges, images, resources, caching and determinism."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videossl.pipeline_runs import compile_pipeline
from videossl.config import parse_config

REPO = Path(__file__).resolve().parents[2]
TASKS = {"split-params", "ingest", "pretrain", "ceiling", "probe-eval", "register"}
STEP_OF_TASK = {"split-params": "split_params", "ingest": "ingest", "pretrain": "pretrain", "ceiling": "ceiling",
                "probe-eval": "probe_eval", "register": "register"}
STEPS = TASKS - {"split-params"}

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


def test_ir_has_the_five_steps_chained_by_their_output_locations(ir):
    tasks = ir["root"]["dag"]["tasks"]
    assert set(tasks) == TASKS
    assert set(ir["root"]["inputDefinitions"]["parameters"]) == {"params", "root", "data_version"}

    deps = {name: set(t.get("dependentTasks", [])) for name, t in tasks.items()}
    # the ceiling needs the data, not the model: it runs beside pretraining
    assert deps == {"split-params": set(), "ingest": {"split-params"}, "pretrain": {"split-params", "ingest"},
                    "ceiling": {"split-params", "ingest"},
                    "probe-eval": {"split-params", "ingest", "pretrain", "ceiling"},
                    "register": {"split-params", "ingest", "pretrain", "probe-eval"}}

    def artifact_source(task: str, name: str) -> tuple[str, str]:
        a = tasks[task]["inputs"]["artifacts"][name]["taskOutputArtifact"]
        return a["producerTask"], a["outputArtifactKey"]

    # Datasets and models are artifacts (lineage in the UI), passed from the task that made them.
    for consumer in ("pretrain", "ceiling", "probe-eval", "register"):
        assert artifact_source(consumer, "data") == ("ingest", "data")
    for consumer in ("probe-eval", "register"):
        assert artifact_source(consumer, "model") == ("pretrain", "model")
    p = tasks["register"]["inputs"]["parameters"]["eval_uri"]["taskOutputParameter"]
    assert (p["producerTask"], p["outputParameterKey"]) == ("probe-eval", "eval_uri")
    p = tasks["probe-eval"]["inputs"]["parameters"]["ceiling_uri"]["taskOutputParameter"]
    assert (p["producerTask"], p["outputParameterKey"]) == ("ceiling", "ceiling_uri")

    assert tasks["split-params"]["inputs"]["parameters"]["params"] == {"componentInputParameter": "params"}
    for name in STEPS:
        params = tasks[name]["inputs"]["parameters"]
        # each step gets its own share of the params, never the whole text
        assert params["params"] == {"taskOutputParameter": {"producerTask": "split-params",
                                                            "outputParameterKey": STEP_OF_TASK[name]}}
        # each component derives its params-addressed output folder from the run's root itself
        assert params["root"] == {"componentInputParameter": "root"}
        assert "out_uri" not in params
    assert tasks["ingest"]["inputs"]["parameters"]["data_version"] == {"componentInputParameter": "data_version"}


def test_a_register_only_change_keeps_the_other_steps_cache_keys(cfg, tmp_path):
    """KFP keys a task's cache on its component and inputs: compiled before and after a change to
    register.min_margin_over_frames, every task but register sees the same component and the same
    share of the params (so the same key and output folder); register sees the change."""
    from videossl.step_params import split

    changed = cfg.model_copy(update={"register": cfg.register.model_copy(
        update={"min_margin_over_frames": cfg.register.min_margin_over_frames + 0.05})})
    before, after = (next(yaml.safe_load_all(Path(compile_pipeline(c, tmp_path / f"{n}.yaml")).read_text()))
                     for n, c in (("before", cfg), ("after", changed)))
    shares = [split(ir["root"]["inputDefinitions"]["parameters"]["params"]["defaultValue"]) for ir in (before, after)]
    for step in ("ingest", "pretrain", "ceiling", "probe_eval"):
        assert shares[0][step] == shares[1][step], step
    assert shares[0]["register"] != shares[1]["register"]
    for task in STEPS - {"register"}:
        assert _executor(before, task) == _executor(after, task), task
        assert before["root"]["dag"]["tasks"][task] == after["root"]["dag"]["tasks"][task], task
    # and a pretrain change moves pretrain (and what reads its model) but not ingest
    trained = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"steps": cfg.pretrain.steps + 1})})
    moved = split(json.dumps(trained.model_dump(mode="json")))
    assert moved["ingest"] == shares[0]["ingest"] and moved["pretrain"] != shares[0]["pretrain"]
    assert moved["ceiling"] == shares[0]["ceiling"]  # a new model, the same ceiling


def test_a_step_reading_a_section_it_was_not_handed_fails_naming_it(cfg):
    from videossl.config import ConfigError
    from videossl.step_params import parse_step_params, split

    share = parse_step_params(split(json.dumps(cfg.model_dump(mode="json")))["pretrain"], "pretrain")
    assert share.pretrain == cfg.pretrain and share.ingest == cfg.ingest
    with pytest.raises(ConfigError, match=r"the pretrain step read params section 'register'.*STAGES\['pretrain'\]"):
        share.register.model_name
    assert "register" not in share.model_dump()  # its dump is what it was handed
    with pytest.raises(ConfigError, match=r"the ingest step takes params sections"):
        parse_step_params(json.dumps(cfg.model_dump(mode="json")), "ingest")


def test_ir_images_resources_caching_and_small_outputs(ir, cfg):
    tasks = ir["root"]["dag"]["tasks"]
    for name in TASKS:
        c = _executor(ir, name)
        assert c["image"] == cfg.cluster.image
        command = "\n".join(c["command"])
        # the image has the package: no runtime pip install (neither packages_to_install nor kfp)
        assert "pip install" not in command
        if name == "split-params":
            assert "from videossl.step_params import split" in command
            continue
        # thin wrapper: the body parses its share of the params and calls the one step function
        step = STEP_OF_TASK[name]
        assert "from videossl.step_params import parse_step_params" in command
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
    # datasets and models: artifacts that point at their folders (the data never goes into KFP's store)
    assert artifacts("ingest") == {"data": "system.Dataset"} and artifacts("pretrain") == {"model": "system.Model"}
    # the run's own outputs, shown on the run page
    outs = ir["root"]["dag"]["outputs"]
    assert set(outs["artifacts"]) == {"data", "model", "scores", "report", "model_card"}
    assert set(outs["parameters"]) == {"model_version", "ceiling_uri", "eval_uri", "register_uri"}


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




def test_a_partitioned_ingest_is_partition_tasks_side_by_side_then_a_merge(tmp_path):
    """cluster.ingest_partitions: that many ingest_partition tasks at once (a ParallelFor over their
    numbers), a merge after all of them, and the rest of the DAG on the merged dataset; each task sized,
    retried and given the ingest step's credentials, as the one-task ingest is."""
    cfg = parse_config((REPO / "params.yaml").read_text(), ["cluster.ingest_partitions=3"])
    path = compile_pipeline(cfg, tmp_path / "pipeline.yaml")
    spec, platform = list(yaml.safe_load_all(Path(path).read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    [loop] = [n for n in tasks if n.startswith("for-loop")]
    assert set(tasks) == TASKS - {"ingest"} | {"plan-partitions", loop, "ingest-merge"}
    # the loop runs over the plan's items (one per partition: its params share, number and count)
    assert tasks[loop]["dependentTasks"] == ["plan-partitions"]
    assert tasks[loop]["parameterIterator"]["items"]["inputParameter"].startswith("pipelinechannel--plan-partitions")
    assert tasks[loop]["iteratorPolicy"]["parallelismLimit"] == 3
    assert tasks["plan-partitions"]["inputs"]["parameters"]["count"]["runtimeValue"]["constant"] == 3
    assert loop in tasks["ingest-merge"]["dependentTasks"]
    assert tasks["ingest-merge"]["inputs"]["parameters"]["parts"]["taskOutputParameter"]["producerTask"] == loop
    assert "ingest-merge" in tasks["pretrain"]["dependentTasks"] and "ingest-merge" in tasks["ceiling"]["dependentTasks"]
    inner = spec["components"][tasks[loop]["componentRef"]["name"]]["dag"]["tasks"]["ingest-partition"]
    assert inner["retryPolicy"]["maxRetryCount"] == cfg.cluster.resources["ingest"].retries
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-ingest-partition", "exec-ingest-merge"):
        res = spec["deploymentSpec"]["executors"][name]["container"]["resources"]
        assert res["resourceMemoryLimit"] == cfg.cluster.resources["ingest"].memory, name
        assert {s["secretName"] for s in executors[name]["secretAsEnv"]} == {cfg.cluster.secrets.s3_for("ingest")}, name
