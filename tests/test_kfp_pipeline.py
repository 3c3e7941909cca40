"""The KFP layer: the compiled IR (tasks, data edges, images, resources, caching, determinism) and a
real run of the whole DAG with kfp.local's SubprocessRunner (no Docker) on a tiny config, through
`run_local`, the code path of `videossl pipeline run-local`. No mocks: real steps, real torchrun,
a real MLflow sqlite store read back with MlflowClient.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from pipelines.videossl_pipeline import compile_pipeline, run_local
from videossl.stages import STAGES
from tests.tiny import TINY_OVERRIDES
from videossl.config import parse_config
from videossl.eval.report import inline_images

REPO = Path(__file__).resolve().parents[1]
TASKS = {"ingest", "pretrain", "probe-eval", "register"}
STEP_OF_TASK = {"ingest": "ingest", "pretrain": "pretrain", "probe-eval": "probe_eval", "register": "register"}

# The shared tiny config (tests/tiny.py), a little smaller still: ~1 minute on 2 CPU cores.
TINY = TINY_OVERRIDES + ["pretrain.steps=3", "pretrain.baseline_steps=3", "probe_eval.l2_grid=[0.01]",
                         # the DAG's wiring is under test, not every benchmark task: the three the tiny
                         # synthetic world labels in every split, with the linear probe
                         "probe_eval.tasks=[arrow_of_time, speed, gravity]", "probe_eval.probes=[linear]"]


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


# ----------------------------------------------------------------------------------------------
# run the whole DAG locally


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    # Tasks inherit this environment: they must use the store named in params, nothing leaked.
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
                "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the repo


@pytest.mark.slow
def test_run_local_runs_the_whole_dag_and_registers_the_model(tmp_path, clean_env):
    store = f"sqlite:///{tmp_path}/mlruns.db"
    cfg = parse_config((REPO / "params.yaml").read_text(),
                       TINY + [f"tracking.uri={store}", f"tracking.artifacts={tmp_path}/mlartifacts"])
    root = tmp_path / "run"

    t0 = time.perf_counter()
    result = run_local(cfg, root)
    print(f"\nrun_local: whole DAG in {time.perf_counter() - t0:.1f} s")

    loc = result["locations"]
    for step, where in loc.items():  # {root}/{layout}/{params address}
        rel = Path(where).relative_to(root.resolve() / STAGES[step].out)
        assert len(rel.name) == 16 and int(rel.name, 16) >= 0 and rel.parent == Path("."), where
    data, model, ev, reg_dir = (Path(loc[k]) for k in ("ingest", "pretrain", "probe_eval", "register"))

    # ingest: shards + manifest, split by source video, test split populated
    assert sorted(p.name for p in (data / "shards").iterdir())
    stats = json.loads((data / "ingest.json").read_text())
    worlds = cfg.ingest.synthetic
    assert stats["videos"] == worlds.benchmark.videos + worlds.pool.videos
    assert json.loads((data / "quarantine.json").read_text()) == []
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == stats["clips"]
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["source_id"], r["split"]) == r["split"]  # no video in two splits
    videos_per_split = {s: sum(1 for v in split_of.values() if v == s) for s in ("train", "val", "test")}
    assert videos_per_split["train"] > 0 and videos_per_split["test"] > 0, videos_per_split
    assert stats["clips_per_split"]["test"] > 0

    # pretrain: both checkpoints, both trained the configured steps
    assert (model / "encoder.pt").stat().st_size > 0 and (model / "frame_encoder.pt").stat().st_size > 0
    pre = json.loads((model / "pretrain.json").read_text())
    assert pre["video"]["steps"] == 3 and pre["frames"]["steps"] == 3

    # probe_eval: every task scored for every model, on test videos
    metrics = json.loads((ev / "scores.json").read_text())
    for task in cfg.probe_eval.tasks:
        s = metrics[task]
        assert s["n_test"] > 0
        for m in ("video", "frames", "random_init", "pixels"):
            assert 0.0 <= s[f"{m}_ci_low"] <= s[m] <= s[f"{m}_ci_high"] <= 1.0
    assert (ev / "plots" / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metrics["dataset_digest"] == stats["digest"]

    # the KFP-side small outputs: Metrics (every score) and the two Markdown documents
    for task in cfg.probe_eval.tasks:
        for m in ("video", "frames", "random_init", "pixels"):
            assert result["scores"][f"{task}.{m}"] == pytest.approx(metrics[task][m])
    kfp_out = result["kfp_outputs"]
    # the KFP UI gets the report with its plots inlined (it cannot follow relative links)
    assert Path(kfp_out["report"]).read_text() == inline_images((ev / "report.md").read_text(), ev)
    assert "data:image/png;base64," in Path(kfp_out["report"]).read_text()
    assert "| task |" in Path(kfp_out["report"]).read_text()
    assert Path(kfp_out["model_card"]).read_text() == (reg_dir / "model_card.md").read_text()
    assert Path(kfp_out["scores"]).is_relative_to(root.resolve() / "kfp-root")

    # register: registration.json and the real registry agree. The first version becomes champion only
    # if it passes the gate (it must beat its own bag of frames, which is exactly 0.5 on arrow of time;
    # a 4-step tiny model may not): either way the aliases say what the gate decided.
    registration = json.loads((reg_dir / "registration.json").read_text())
    reg = result["registered"]
    assert reg["model_version"] == registration["version"] == reg["version"]
    assert registration["dataset_digest"] == stats["digest"]
    assert "challenger" in registration["aliases"]
    assert ("champion" in registration["aliases"]) == registration["promoted"]

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    name = cfg.register.model_name
    versions = client.search_model_versions(f"name='{name}'")
    assert [str(v.version) for v in versions] == [registration["version"]]
    version = client.get_model_version_by_alias(name, "champion" if registration["promoted"] else "challenger")
    assert str(version.version) == registration["version"]
    assert version.run_id == registration["run_id"]
    assert version.tags["dataset_digest"] == stats["digest"]
    assert float(version.tags["arrow_of_time.video"]) == pytest.approx(metrics["arrow_of_time"]["video"])


def test_run_local_reports_the_failed_task(tmp_path, clean_env):
    from videossl.errors import StepError

    store = f"sqlite:///{tmp_path}/mlruns.db"
    cfg = parse_config((REPO / "params.yaml").read_text(),
                       [f"ingest.sources=[{tmp_path}/no-such-dir]", f"tracking.uri={store}"])
    with pytest.raises(StepError, match="Inner task failed: 'ingest'") as err:
        run_local(cfg, tmp_path / "run")
    assert "\x1b[" not in str(err.value)  # kfp.local's colour codes stripped for the CLI's message
    assert not (tmp_path / "run" / STAGES["pretrain"].out).exists()  # nothing downstream ran
