"""`dvc repro` runs the four stages, and reruns only what a params change touches."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tiny import REPO, tiny_params_yaml

BIN = Path(sys.executable).parent


def _run(cmd, cwd, stdout_only: bool = False):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def _ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([a-z_]+)'", log))


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvc-project")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    # dvc.yaml's top-level plots draw the objective study's committed results, as in a clone
    shutil.copytree(REPO / "outputs" / "study" / "plots", root / "outputs" / "study" / "plots")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "params.yaml").write_text(tiny_params_yaml(root))
    _run(["git", "init", "-q"], root)
    _run(["git", "config", "user.email", "tests@videossl.local"], root)
    _run(["git", "config", "user.name", "videossl tests"], root)
    _run([str(BIN / "dvc"), "init", "-q"], root)
    return root


def test_repro_runs_all_stages_then_only_what_changed(dvc_project):
    first = _run([str(BIN / "dvc"), "repro"], dvc_project)
    assert _ran(first) == {"ingest", "pretrain", "probe_eval", "register"}
    for out in ["data/ingest/manifest.jsonl", "outputs/pretrain/encoder.pt", "outputs/eval/metrics.json",
                "outputs/eval/plots/benchmark.png", "outputs/register/registration.json"]:
        assert (dvc_project / out).is_file(), out
    assert json.loads((dvc_project / "outputs/register/registration.json").read_text())["version"] in ("1", 1)

    assert _ran(_run([str(BIN / "dvc"), "repro"], dvc_project)) == set()  # nothing changed, nothing runs
    _run(["git", "add", "-A"], dvc_project)
    _run(["git", "commit", "-q", "-m", "first experiment"], dvc_project)  # the baseline of the diffs below

    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    params["probe_eval"]["epochs"] += 5
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = _run([str(BIN / "dvc"), "repro"], dvc_project)
    assert _ran(second) == {"probe_eval", "register"}
    assert json.loads((dvc_project / "outputs/register/registration.json").read_text())["version"] in ("2", 2)

    metrics = _run([str(BIN / "dvc"), "metrics", "show", "--json"], dvc_project)
    assert "arrow_of_time" in metrics and "clips_per_split" in metrics

    # two experiments side by side: metrics keyed the way people read them, plots by task/model/probe
    diff = json.loads(_run([str(BIN / "dvc"), "metrics", "diff", "--all", "--json"], dvc_project, stdout_only=True))
    scores = diff["outputs/eval/metrics.json"]
    assert {"arrow_of_time.video", "arrow_of_time.frames", "arrow_of_time.video_attentive",
            "future_retrieval.video_predictor"} <= set(scores)
    assert set(scores["arrow_of_time.video"]) >= {"old", "new"}
    plots = json.loads(_run([str(BIN / "dvc"), "plots", "diff", "--json", "HEAD"], dvc_project, stdout_only=True))
    assert not plots.get("errors"), plots["errors"]
    rows = [r for p in plots["data"]["outputs/eval/plots/scores.json"] for r in p["content"]["data"]["values"]]
    names = {(r["rev"], r["name"]) for r in rows}
    assert ("HEAD", "arrow_of_time/video") in names and ("workspace", "arrow_of_time/video") in names
