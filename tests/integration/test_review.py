"""`videossl review` end to end: versions registered by the real register step in a real sqlite store,
then the CLI (a subprocess, as a user runs it) or review() reads them back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_registry import _clean_mlflow_env, make_inputs  # noqa: F401  (_clean_mlflow_env: autouse fixture)
from videossl.config import Config, dump_config
from videossl.review import review
from videossl.steps.register import register

NAME = "videossl-encoder-review"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def make_config(store: str, artifacts: Path, **sections) -> Config:
    return Config.model_validate({"tracking": {"uri": store, "artifacts": str(artifacts), "experiment": "review"},
                                  "register": {"model_name": NAME, "gate_metrics": ["arrow_of_time.video"]},
                                  **sections})


def cells(out: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in out.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and parts[0] == first:
            return parts
    raise AssertionError(f"no row {first!r} in:\n{out}")


def test_review_prints_champion_and_challenger_side_by_side(tmp_path, monkeypatch):
    store, arts = f"sqlite:///{tmp_path / 'mlruns.db'}", tmp_path / "mlartifacts"
    champion_cfg = make_config(store, arts, seed=1, pretrain={"steps": 300})
    challenger_cfg = make_config(store, arts, seed=2, pretrain={"steps": 50, "lr": 0.003})

    monkeypatch.setenv("VIDEOSSL_GIT_COMMIT", COMMIT_A)
    data, model, ev = make_inputs(tmp_path / "a", 0.70, step=1, digest="ab" * 32)
    assert register(champion_cfg, data, model, ev, tmp_path / "out-a")["promoted"]
    monkeypatch.setenv("VIDEOSSL_GIT_COMMIT", COMMIT_B)
    data, model, ev = make_inputs(tmp_path / "b", 0.66, step=2, digest="cd" * 32, speed=0.7)
    worse = register(challenger_cfg, data, model, ev, tmp_path / "out-b")
    assert not worse["promoted"]

    params = tmp_path / "params.yaml"
    params.write_text(dump_config(champion_cfg))
    proc = subprocess.run([sys.executable, "-m", "videossl.cli", "review", "--params", str(params)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    print(out)

    assert out.startswith(f"# {NAME}: champion vs challenger\n\nstore: {store}\n")
    assert "NO CHAMPION" not in out and "NO CHALLENGER" not in out
    # the decision and the gate metric within the first 10 lines
    head = out.splitlines()[:10]
    assert "decision: challenger v2 is not the champion (gate: challenger only)" in head
    assert "  arrow_of_time.video: champion 0.700 [0.650, 0.750], challenger 0.660 [0.610, 0.710], -0.040" in head
    assert cells(out, "") == ["", "champion v1", "challenger v2"]
    assert cells(out, "git commit") == ["git commit", COMMIT_A, COMMIT_B]
    assert cells(out, "dataset digest") == ["dataset digest", "ab" * 32, "cd" * 32]
    assert cells(out, "checkpoint step") == ["checkpoint step", "1", "2"]
    assert cells(out, "gate decision") == ["gate decision", "promote", "challenger only"]
    assert cells(out, "status") == ["status", "ready", "ready"]
    assert f"gate of challenger v2: {worse['reason']}" in out

    # the scores that differ with their intervals, both versions, the gate metric marked; equal scores and
    # hyperparameters (l2) left out
    assert cells(out, "arrow_of_time.video *") == [
        "arrow_of_time.video *", "0.700 [0.650, 0.750]", "0.660 [0.610, 0.710]", "-0.040"]
    assert cells(out, "speed.video") == ["speed.video", "0.620 [0.570, 0.670]", "0.700 [0.650, 0.750]", "+0.080"]
    for same in ("arrow_of_time.frames", "gravity_law.n_test", "speed.chance"):
        assert f"| {same} " not in out, same
    assert "equal on both, not shown" in out
    assert "arrow_of_time.video_l2" not in out and "| arrow_of_time.video_ci_low" not in out

    # exactly the params that differ
    section = out.split("## Params that differ", 1)[1]
    listed = [line.split("|")[1].strip() for line in section.splitlines()[4:] if line.startswith("|")]
    assert listed == ["pretrain.lr", "pretrain.steps", "seed"]  # same-valued params are not listed
    assert section.startswith(" (3 of ")
    assert cells(section, "seed") == ["seed", "1", "2"]
    # the champion's lr is the config default (= params.yaml's)
    from videossl.config import PretrainConfig
    default = PretrainConfig()
    assert cells(section, "pretrain.steps") == ["pretrain.steps", "300", "50"]
    assert cells(section, "pretrain.lr") == ["pretrain.lr", str(default.lr), "0.003"]

    # a readable table: every line of each table has the same width, so the columns align
    for block in out.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({len(r) for r in rows}) == 1, block


def test_review_says_there_is_no_champion(tmp_path, monkeypatch, capsys):
    """A first model that does not beat its bag of frames is challenger only: no champion at all.
    The store comes from MLFLOW_TRACKING_URI (tracking.uri: null); scores fall back to the version's
    tags when the run's scores.json is gone."""
    store, arts = f"sqlite:///{tmp_path / 'mlruns.db'}", tmp_path / "mlartifacts"
    cfg = make_config(store, arts)
    data, model, ev = make_inputs(tmp_path / "a", 0.5, frames=0.5)
    first = register(cfg, data, model, ev, tmp_path / "out")
    assert not first["promoted"] and first["aliases"] == ["challenger"]
    for p in arts.rglob("scores.json"):
        p.unlink()
    capsys.readouterr()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    env_cfg = Config.model_validate({**json.loads(cfg.model_dump_json()), "tracking": {"uri": None}})
    assert review(env_cfg) == 0
    out = capsys.readouterr().out
    assert f"NO CHAMPION: no version of {NAME} has passed the gate" in out
    assert cells(out, "") == ["", "champion (none)", "challenger v1"]
    assert cells(out, "git commit") == ["git commit", "—", os.environ["VIDEOSSL_GIT_COMMIT"]]
    assert "note: v1: scores from its tags (the run's eval/scores.json could not be read" in out
    assert cells(out, "arrow_of_time.video *") == ["arrow_of_time.video *", "—", "0.500 [0.450, 0.550]", "—"]
    assert "failed arrow_of_time.video" in out and "vs bag of frames 0.5: gain +0, needs at least +0.05: fail" in out
    assert "## Params that differ" not in out  # nothing to compare with


def test_review_with_nothing_to_review(tmp_path, capsys):
    missing = tmp_path / "nowhere.db"
    assert review(make_config(f"sqlite:///{missing}", tmp_path / "a")) == 1
    assert f"no MLflow store at sqlite:///{missing}" in capsys.readouterr().out
    assert not missing.exists()  # looking did not create an empty store

    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    register(make_config(store, tmp_path / "a"), data, model, ev, tmp_path / "out")
    capsys.readouterr()
    # one version that passed the gate holds both aliases: said plainly, not shown as a comparison
    assert review(make_config(store, tmp_path / "a")) == 0
    assert "v1 is both champion and challenger" in capsys.readouterr().out
    assert review(make_config(store, tmp_path / "a"), model_name="no-such-model") == 1
    assert f"no registered model 'no-such-model' with any version in {store}" in capsys.readouterr().out
