"""A real run of the whole KFP DAG with kfp.local's SubprocessRunner (no Docker) on a tiny config,
through `run_local`, the code path of `videossl pipeline run-local`, with its data on a real S3 server
as on the cluster. No mocks: real steps, real torchrun, a real MLflow sqlite store read back with
MlflowClient."""
import json
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from videossl import storage
from videossl.pipeline_runs import run_local
from videossl.tracking import DATASET_NAME, PIPELINE_RUN_TAG
from videossl.stages import STAGES
from tests.tiny import TINY_OVERRIDES
from videossl.config import parse_config
from videossl.eval.report import inline_images

REPO = Path(__file__).resolve().parents[2]
# The shared tiny config (tests/tiny.py), a little smaller still: ~1 minute on 2 CPU cores.
TINY = TINY_OVERRIDES + ["pretrain.steps=3", "pretrain.baseline_steps=3", "probe_eval.l2_grid=[0.01]",
                         # the DAG's wiring is under test, not every benchmark task: the three the tiny
                         # synthetic world labels in every split, with the linear probe
                         "probe_eval.tasks=[gravity_law, arrow_of_time]", "probe_eval.probes=[linear]"]


# ----------------------------------------------------------------------------------------------
# compile


@pytest.fixture(scope="module")
def cfg():
    return parse_config((REPO / "params.yaml").read_text())


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
def test_run_local_runs_the_whole_dag_through_s3_and_registers_the_model(tmp_path, clean_env, s3_server, monkeypatch):
    """The whole DAG once, with an s3:// root as on the cluster: every task reads its inputs from S3 and
    publishes its output there (`storage.staged`), as the pods do; only KFP's small artifacts stay
    local. (A local-folder root takes the same path minus the staging: its set-up is covered by
    test_run_local_reports_the_failed_task.)"""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)  # what the videossl-s3 Secret gives a pod
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setenv("VIDEOSSL_STAGING", str(staging))
    root = f"s3://{s3_server.make_bucket('dag-root')}/runs"
    store = f"sqlite:///{tmp_path}/mlruns.db"
    # the ingest as 2 partition tasks side by side and a merge, each publishing to S3 (the one-task ingest
    # runs in tests/integration/test_dvc_pipeline.py::test_the_kfp_dag_gives_what_dvc_repro_gave)
    cfg = parse_config((REPO / "params.yaml").read_text(),
                       TINY + [f"tracking.uri={store}", f"tracking.artifacts={tmp_path}/mlartifacts", f"cluster.root={root}",
                               "cluster.ingest_partitions=2", "ingest.chunk_videos=16"])

    t0 = time.perf_counter()
    result = run_local(cfg, root, kfp_root=tmp_path / "kfp-root")
    print(f"\nrun_local: whole DAG in {time.perf_counter() - t0:.1f} s")

    loc = result["locations"]
    for step, uri in loc.items():  # {root}/{layout}/{params address}, published whole (manifest last)
        address = uri.removeprefix(f"{root}/{STAGES[step].out}/")
        assert len(address) == 16 and int(address, 16) >= 0, uri
        assert storage.read_complete(uri)
    # the merge moved no shard: the dataset lists the partitions' shard objects where they are
    listed = {rel: e for rel, e in storage.read_complete(loc["ingest"]).items() if rel.startswith("shards/")}
    assert listed and all("/part-" in e["uri"] and not e["uri"].startswith(loc["ingest"]) for e in listed.values()), listed
    assert not storage.list_s3(f"{loc['ingest']}/shards/")
    assert not any(staging.iterdir())  # every staging folder was removed
    # data stayed in S3; the one local copy is the registry's own (MLflow's artifact store, tracking.artifacts)
    local = [p for p in (*tmp_path.rglob("*.npy"), *tmp_path.rglob("encoder.pt")) if tmp_path / "mlartifacts" not in p.parents]
    assert not local, local

    assert set(loc) == set(STAGES)
    with storage.staged([loc[s] for s in ("ingest", "pretrain", "ceiling", "probe_eval", "register")]) as (dirs, _):
        data, model, ceiling_dir, ev, reg_dir = dirs
        # ingest: shards + manifest, split by source video, test split populated
        assert sorted(p.name for p in (data / "shards").iterdir())
        stats = json.loads((data / "ingest.json").read_text())
        assert json.loads((data / "timings.json").read_text())["partitions"] == 2  # merged from both partitions
        worlds = cfg.ingest.synthetic
        assert stats["videos"] == sum(worlds.benchmark.families.values()) + sum(worlds.pool.families.values())
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

        # ceiling: the held-out task's network, and the ceiling probe-eval scored against
        ceiling_record = json.loads((ceiling_dir / "ceiling.json").read_text())
        assert ceiling_record["identity"]["dataset"] == stats["digest"]
        assert set(ceiling_record["correct"]) == {"gravity_law"}

        # probe_eval: every task scored for every model, on test videos
        metrics = json.loads((ev / "scores.json").read_text())
        for task in cfg.probe_eval.tasks:
            s = metrics[task]
            assert s["n_test"] > 0
            for m in ("video", "frames", "random_init", "pixels"):
                assert 0.0 <= s[f"{m}_ci_low"] <= s[m] <= s[f"{m}_ci_high"] <= 1.0
        assert (ev / "plots" / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert metrics["dataset_digest"] == stats["digest"]
        correct = ceiling_record["correct"]["gravity_law"]
        assert metrics["gravity_law"]["supervised"] == pytest.approx(sum(correct) / len(correct), abs=1e-4)
        eval_seconds = json.loads((ev / "timings.json").read_text())["total"]
        report = (ev / "report.md").read_text()
        registration = json.loads((reg_dir / "registration.json").read_text())
        card = (reg_dir / "model_card.md").read_text()
        report_dir = ev

        # the KFP-side small outputs: Metrics (every score) and the two Markdown documents
        for task in cfg.probe_eval.tasks:
            for m in ("video", "frames", "random_init", "pixels"):
                assert result["scores"][f"{task}.{m}"] == pytest.approx(metrics[task][m])
        kfp_out = result["kfp_outputs"]
        # the KFP UI gets the report with its plots inlined (it cannot follow relative links)
        assert Path(kfp_out["report"]).read_text() == inline_images(report, report_dir)
    assert "data:image/png;base64," in Path(kfp_out["report"]).read_text()
    assert "| task |" in Path(kfp_out["report"]).read_text()
    assert Path(kfp_out["model_card"]).read_text() == card
    assert Path(kfp_out["scores"]).is_relative_to(tmp_path / "kfp-root")

    # register: registration.json and the real registry agree. The first version becomes champion only
    # if it passes the gate (it must beat its own bag of frames, which is exactly 0.5 on arrow of time;
    # a 3-step tiny model may not): either way the aliases say what the gate decided.
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

    # one execution, one parent run: every step's run is its child, carries the commit and logged the
    # dataset it read (by digest); the probe-eval run spans the step's work, not just its logging
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags[PIPELINE_RUN_TAG].startswith("kfp-local-"), parents
    steps = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(steps) == {"pretrain-video", "pretrain-frames", "probe-eval", "register"}, set(steps)
    for name, r in steps.items():
        assert r.data.tags["git_commit"] and r.info.status == "FINISHED", name
        [inp] = r.inputs.dataset_inputs
        assert {t.key: t.value for t in inp.tags}["dataset_digest"] == stats["digest"], name
        assert inp.dataset.digest == stats["digest"][:12] and inp.dataset.name == DATASET_NAME
    evaluation = steps["probe-eval"].info
    assert (evaluation.end_time - evaluation.start_time) / 1000 >= eval_seconds - 0.5
    assert parents[0].info.start_time <= min(r.info.start_time for r in steps.values())
    assert parents[0].info.end_time >= max(r.info.end_time for r in steps.values())


def test_run_local_reports_the_failed_task(tmp_path, clean_env, capsys):
    from videossl.errors import StepError

    store = f"sqlite:///{tmp_path}/mlruns.db"
    cfg = parse_config((REPO / "params.yaml").read_text(),
                       [f"ingest.sources=[{tmp_path}/no-such-dir]", f"tracking.uri={store}"])
    with pytest.raises(StepError, match="Inner task failed: 'ingest'") as err:
        run_local(cfg, tmp_path / "run")
    assert "\x1b[" not in str(err.value)  # kfp.local's colour codes stripped for the CLI's message
    assert not (tmp_path / "run" / STAGES["pretrain"].out).exists()  # nothing downstream ran
    # the task's log reads as the step's own output: its executor input (every parameter as indented
    # JSON, the params text included) is one line, and the step's error is there
    log = capsys.readouterr().out
    assert "Got executor_input (not shown" in log and '"inputs": {' not in log and "no-such-dir" in log, log[-3000:]
    assert len(log.splitlines()) < 80 and max(map(len, log.splitlines())) < 1100, log
