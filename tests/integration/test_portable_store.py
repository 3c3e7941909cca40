"""A local registry moves with its checkout: a copy reads and writes its own `mlartifacts/`, never
the original's, and a missing artifact is reported with the path that was looked in.

The real register step writes a real sqlite store with the params' relative paths (as `make run`
does); the checkout is then copied and the original's artifacts taken away."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_registry import _clean_mlflow_env, make_inputs  # noqa: F401  (autouse fixture)
from videossl.config import Config, dump_config
from videossl.embed import EmbedError, load_encoder
from videossl.steps.register import register

NAME = "videossl-encoder-portable"


def _config() -> Config:  # what params.yaml says: paths relative to the project
    return Config.model_validate({"tracking": {"uri": "sqlite:///mlruns.db", "artifacts": "mlartifacts",
                                               "experiment": "portable"},
                                  "register": {"model_name": NAME, "gate_metrics": ["arrow_of_time.video"]}})


def _paths(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for q in ("SELECT artifact_location FROM experiments WHERE name='portable'",
                               "SELECT artifact_uri FROM runs", "SELECT storage_location FROM model_versions")
                for r in con.execute(q)]
    finally:
        con.close()


@pytest.fixture
def copied(tmp_path, monkeypatch):
    """A project that registered one version, copied to another folder; the original's artifacts gone."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    monkeypatch.chdir(original)
    data, model, ev = make_inputs(original / "in", 0.7)
    first = register(_config(), data, model, ev, original / "out")
    assert first["promoted"] and first["tracking_uri"] == "sqlite:///mlruns.db"  # the record moves too
    shutil.copytree(original, copy)
    shutil.rmtree(original / "mlartifacts")  # whatever the copy reads must come from its own folder
    monkeypatch.chdir(copy)
    return original, copy


def test_a_copied_checkout_reads_and_writes_its_own_store(copied):
    original, copy = copied
    assert all(str(original) in p for p in _paths(copy / "mlruns.db"))  # as MLflow wrote them

    # reading: the registered model by alias, as `videossl embed --model` does
    enc = load_encoder(f"models:/{NAME}@champion", tracking_uri="sqlite:///mlruns.db")
    assert enc is not None
    paths = _paths(copy / "mlruns.db")
    assert paths and all(p.startswith((copy.as_uri() + "/", str(copy) + "/")) for p in paths), paths
    # and the pyfunc line `videossl summary` prints
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{copy / 'mlruns.db'}")
    assert mlflow.pyfunc.load_model(f"models:/{NAME}/1") is not None

    # writing: a second registration from the copy lands in the copy's folder only
    data, model, ev = make_inputs(copy / "in2", 0.75, step=2)
    second = register(_config(), data, model, ev, copy / "out2")
    assert str(second["version"]) == "2"
    assert not (original / "mlartifacts").exists()
    assert len(list((copy / "mlartifacts").rglob("encoder.pt"))) == 2

    # the summary a user runs in the copy names the copy's store
    proc = subprocess.run([sys.executable, "-m", "videossl.cli", "summary", "--json", "--register", "out2",
                           "--eval", str(copy / "in2" / "eval")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["registration"]["tracking_uri"] == f"sqlite:///{copy / 'mlruns.db'}"


def test_a_missing_artifact_names_where_it_was_looked_for(copied):
    _, copy = copied
    shutil.rmtree(copy / "mlartifacts")
    with pytest.raises(EmbedError) as e:
        load_encoder(f"models:/{NAME}@champion", tracking_uri="sqlite:///mlruns.db")
    assert f"the checkpoint is not at {(copy / 'mlartifacts').as_uri()}/" in str(e.value)

    with pytest.raises(EmbedError, match="no MLflow store at"):
        load_encoder(f"models:/{NAME}@champion", tracking_uri="sqlite:///nowhere.db")
    assert not (copy / "nowhere.db").exists()  # looking did not create an empty store


def test_review_json_is_one_object_with_the_decision(copied):
    _, copy = copied
    (copy / "params.yaml").write_text(dump_config(_config()))
    proc = subprocess.run([sys.executable, "-m", "videossl.cli", "review", "--json"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["model"] == NAME and got["store"] == f"sqlite:///{copy / 'mlruns.db'}"
    assert got["challenger_is_champion"] and got["decision"] == "promote"
    assert got["gate_metrics"]["arrow_of_time.video"]["challenger"] == 0.7
    assert got["champion"]["version"] == got["challenger"]["version"] == "1"
    assert got["champion"]["scores"]["arrow_of_time.video_ci_low"] == 0.65
