"""Register step against real MLflow: an embedded sqlite store and a real `mlflow server` process.

No MLflow mocks: versions, tags and aliases are read back through MlflowClient, and the champion is
loaded back with `mlflow.pyfunc.load_model` (safetensors weights, nothing unpickled) and run on
uint8 clips, here and in a fresh virtualenv; weights swapped in the artifact store are refused.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from videossl import embed, registered_model, registry
from videossl.config import Config
from videossl.data.transforms import to_model_input
from videossl.embed import load_encoder
from videossl.gate import Policy
from videossl.eval.scores import SCORED_WEIGHTS
from videossl.models.checkpoint import save_checkpoint, state_digest
from videossl.models.vit import VideoViT, VitShape
from videossl.registry import RegisterError
from videossl.steps.register import register

SHAPE = VitShape(frames=4, img_size=16, patch=8, tubelet=2, dim=16, depth=1, heads=2)
NAME = "videossl-encoder-test"


# ----------------------------------------------------------------------------------------------
# fixtures (kept here rather than in a shared conftest.py)


@pytest.fixture(autouse=True)
def _clean_mlflow_env(monkeypatch):
    # The step must talk to the store named in the config, not one leaked from the environment.
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
                "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VIDEOSSL_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


def make_inputs(root: Path, gate: float, *, step: int = 10, frame_encoder: bool = True, frames: float = 0.5,
                speed: float = 0.62, speed_frames: float = 0.41, digest: str = "ab" * 32) -> tuple[Path, Path, Path]:
    """data/ingest.json, model/encoder.pt (+ frame_encoder.pt), eval/scores.json + report + plot.

    `gate`/`frames`: arrow_of_time of the video model / the bag of frames; `speed`/`speed_frames` the same
    for speed. Every score has a 95% interval (±0.05 here), as probe-eval writes them."""
    data, model, ev = root / "data", root / "model", root / "eval"
    for d in (data, model, ev / "plots"):
        d.mkdir(parents=True, exist_ok=True)
    (data / "ingest.json").write_text(json.dumps({"digest": digest, "videos": 12, "clips": 96}))
    torch.manual_seed(step)
    enc = VideoViT(SHAPE)
    save_checkpoint({"shape": SHAPE.as_dict(), "encoder": enc.state_dict(), "step": step, "variant": "video"},
                    model / "encoder.pt")
    if frame_encoder:
        fshape = VitShape(frames=1, img_size=16, patch=8, tubelet=1, dim=16, depth=1, heads=2)
        save_checkpoint({"shape": fshape.as_dict(), "encoder": VideoViT(fshape).state_dict(), "step": step,
                         "variant": "frames"}, model / "frame_encoder.pt")
    def scored(**models) -> dict:
        out = {}
        for m, v in models.items():
            out.update({m: v, f"{m}_ci_low": round(v - 0.05, 4), f"{m}_ci_high": round(v + 0.05, 4), f"{m}_l2": 0.01})
        return out

    metrics = {
        "arrow_of_time": {**scored(video=gate, frames=frames, frames_strongest=frames), "frames_strongest_probe": "linear",
                          "n_test": 240, "n_test_videos": 80, "chance": 0.5, "control_static": 0.49},
        "speed": {**scored(video=speed, frames=speed_frames), "n_test": 240, "chance": 0.3333},
        "gravity_law": {**scored(video_chosen=0.9, frames_strongest=0.35), "video_chosen_probe": "linear",
                        "frames_strongest_probe": "knn", "n_test": 180, "n_test_videos": 60, "chance": 0.25},
        "wall_seconds": 12.5,
        "dataset_digest": digest,
        SCORED_WEIGHTS: {"video": state_digest(enc.state_dict())},  # as probe-eval records the model it scored
        "notes": "strings are not scores",
    }
    (ev / "scores.json").write_text(json.dumps(metrics))
    (ev / "report.md").write_text("# probe-eval report\n\nall good\n")
    # a real (tiny) PNG: 1x1 white pixel
    (ev / "plots" / "scores.png").write_bytes(bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c63f8ffff3f0005fe02fea7d6a4a50000000049454e44ae426082"))
    return data, model, ev


def make_config(tracking_uri: str, artifacts: str, **register_cfg) -> Config:
    return Config.model_validate({
        "tracking": {"uri": tracking_uri, "artifacts": artifacts, "experiment": "videossl-test"},
        "register": {"model_name": NAME, "gate_metrics": ["arrow_of_time.video"], **register_cfg},
    })


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    # the SQL store hands back versions as ints, a tracking server as strings: compare as strings
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _server_process(request, tmp_path_factory):
    """Start `mlflow server` as soon as this module runs (it takes 10-30 s to answer), so it boots
    while the embedded-store tests run; only when a selected test asks for `mlflow_server`.
    The whole process group is always terminated at the end."""
    if not any("mlflow_server" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield None
        return
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = ([str(mlflow_bin)] if mlflow_bin.exists() else [sys.executable, "-m", "mlflow"]) + [
        "server", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
        "--artifacts-destination", str(root / "art"), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no huey job consumers: fewer processes, faster boot
    log = open(root / "server.log", "wb")
    # own session: the server spawns a uvicorn worker, and the whole group must go when the tests end
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield {"proc": proc, "url": f"http://127.0.0.1:{port}", "root": root}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def mlflow_server(_server_process):
    """The running server: waits (up to 90 s from now) until it answers GET /health."""
    proc, url, root = _server_process["proc"], _server_process["url"], _server_process["root"]
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n"
                               + (root / "server.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return _server_process
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("mlflow server did not answer /health within 90 s:\n"
                               + (root / "server.log").read_text()[-3000:])
        time.sleep(0.5)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory) -> str:
    """One embedded store for the module (creating its tables takes seconds); tests use own model names."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlruns.db'}"


# ----------------------------------------------------------------------------------------------
# embedded sqlite store


def test_gate_moves_champion_only_on_strictly_better_scores(tmp_path, sqlite_store, capsys):
    # margins 0: any strict gain promotes (the params defaults, 0.01 and 0.05, are tested below)
    cfg = make_config(sqlite_store, str(tmp_path / "mlartifacts"), min_margin_over_champion=0, min_margin_over_frames=0)

    def run(i: int, gate: float, step: int) -> dict:
        data, model, ev = make_inputs(tmp_path / f"in{i}", gate, step=step, frame_encoder=(i == 1))
        out = tmp_path / f"out{i}"
        result = register(cfg, data, model, ev, out)
        assert json.loads((out / "registration.json").read_text()) == result
        assert (out / "model_card.md").is_file()
        return result

    r1 = run(1, 0.70, step=10)
    line1 = capsys.readouterr().out
    r2 = run(2, 0.80, step=20)
    r3 = run(3, 0.75, step=30)
    line3 = capsys.readouterr().out

    # decisions, as returned and written
    assert (r1["version"], r1["promoted"]) == ("1", True)
    assert r1["reason"] == ("promoted: no champion yet | arrow_of_time.video 0.7 vs champion: none yet, pass; "
                            "vs bag of frames 0.5: gain +0.2, needs more than 0: pass")
    assert r1["aliases"] == ["challenger", "champion"] and r1["champion_version"] == "1"
    assert r2["promoted"] and r2["previous_champion_version"] == "1"
    assert r2["gate"]["checks"]["arrow_of_time.video"]["vs_champion"]["other"] == 0.70
    assert r2["aliases"] == ["challenger", "champion"] and r2["champion_version"] == "2"
    assert not r3["promoted"] and r3["aliases"] == ["challenger"] and r3["champion_version"] == "2"
    check3 = r3["gate"]["checks"]["arrow_of_time.video"]
    assert check3["value"] == 0.75 and check3["vs_champion"]["other"] == 0.80 and not check3["passed"]
    assert check3["vs_champion"]["gain"] == pytest.approx(-0.05) and check3["vs_frames"]["passed"]
    assert r3["gate"]["metrics"] == ["arrow_of_time.video"] and r3["gate"]["combine"] == "all"
    assert r3["reason"] == ("challenger only (champion stays v2): failed arrow_of_time.video | arrow_of_time.video "
                            "0.75 vs champion v2 0.8: gain -0.05, needs more than 0: fail; vs bag of frames 0.5: gain +0.25, needs more than 0: pass")
    assert f"register: {NAME} v1 -> champion + challenger (promoted: no champion yet | " in line1
    assert f"register: {NAME} v3 -> challenger (challenger only (champion stays v2): " in line3
    assert r3["tracking_uri"].startswith("sqlite:///") and r3["model_uri"] == f"models:/{NAME}/3"

    # the registry itself, read back
    client = MlflowClient(tracking_uri=r3["tracking_uri"])
    assert aliases(client, NAME) == {"champion": "2", "challenger": "3"}
    assert client.get_model_version(NAME, "1").aliases == []
    v2 = client.get_model_version_by_alias(NAME, "champion")
    assert str(v2.version) == "2" and v2.run_id == r2["run_id"]
    assert v2.tags["arrow_of_time.video"] == "0.8"
    assert float(v2.tags["gravity_law.video_chosen"]) == 0.9 and "speed.frames" not in v2.tags  # the video model per task
    assert "wall_seconds" not in v2.tags and "notes" not in v2.tags and "arrow_of_time.video_l2" not in v2.tags
    assert len(v2.tags) <= 30, sorted(v2.tags)  # a screenful on the registry page; every score is in the run
    assert v2.tags["dataset_digest"] == "ab" * 32
    assert v2.tags["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert v2.tags["gate.metrics"] == "arrow_of_time.video" and v2.tags["gate.decision"] == "promote"
    assert v2.tags["gate.reason"] == r2["reason"] and v2.tags["gate.previous_champion"] == "1"
    assert v2.tags["gate.arrow_of_time.video"].startswith("pass: arrow_of_time.video 0.8 vs champion v1 0.7: gain +0.1, needs more than 0")
    assert float(v2.tags["gate.min_margin_over_champion"]) == 0.0
    assert v2.tags["checkpoint_step"] == "20" and v2.tags["status"] == "ready"
    # the description is a summary that fits (the registry page shows it whole); the card is an artifact
    assert v2.description.startswith(f"**{NAME} v2**: a self-supervised video encoder, **champion**.")
    assert "model_card.md" in v2.description and len(v2.description) <= registry.DESCRIPTION_LIMIT
    assert "| gravity_law | 0.900 [0.85, 0.95] (lin) |" in v2.description and v2.tags["gate.reason"] in v2.description

    both = registry.champion_and_challenger(client, NAME)
    assert both["champion"].version == "2" and both["challenger"].version == "3"
    assert both["champion"].score("arrow_of_time.video") == 0.8
    assert both["challenger"].scores()["arrow_of_time.video"] == 0.75
    assert registry.champion_and_challenger(client, "no-such-model") == {"champion": None, "challenger": None}

    # the run: params, metrics, eval artifacts, card
    run = client.get_run(r3["run_id"])
    assert run.info.run_name == "register"
    assert run.data.params["register.model_name"] == NAME and run.data.params["model.patch"] == "8"
    assert run.data.metrics["arrow_of_time.video"] == 0.75 and run.data.metrics["gravity_law.n_test"] == 180
    assert run.data.tags["dataset_digest"] == "ab" * 32
    arts = {a.path for a in client.list_artifacts(r3["run_id"], "eval")}
    assert {"eval/scores.json", "eval/report.md", "eval/plots"} <= arts
    assert [a.path for a in client.list_artifacts(r3["run_id"], "eval/plots")] == ["eval/plots/scores.png"]
    card = mlflow.artifacts.load_text(f"runs:/{r3['run_id']}/model_card.md")
    assert card == (tmp_path / "out3" / "model_card.md").read_text()
    assert "| arrow_of_time | 0.750 [0.70, 0.80] | — | 0.500 [0.45, 0.55] (lin) | +0.250 vs bag of frames | 240 (80 videos) | 0.500 |" in card
    assert "| gravity_law | 0.900 [0.85, 0.95] (lin) | 0.350 [0.30, 0.40] (knn) | +0.550 vs bag of frames | 180 (60 videos) | 0.250 |" in card
    assert "**not promoted**" in card and "ab" * 32 in card and "## Limits" in card
    assert "- `arrow_of_time.video` **fail**: arrow_of_time.video 0.75 vs champion v2 0.8: gain -0.05, needs more than 0: fail" in card
    assert "frame_encoder.pt" in (tmp_path / "out1" / "model_card.md").read_text()
    assert "- initialised from: a random draw (pretrain.init_from: null)" in card

    # each logged model links its registered version (as mlflow.register_model would)
    for r in (r1, r2, r3):
        logged = client.get_logged_model(r["logged_model_uri"].removeprefix("models:/"))
        assert json.loads(logged.tags[registry.LOGGED_MODEL_VERSIONS_TAG]) == [{"name": NAME, "version": r["version"]}]

    # the champion loads back as the encoder of checkpoint step 20 and embeds uint8 clips, time order kept
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    torch.manual_seed(20)
    reference = VideoViT(SHAPE).eval()
    clips = torch.randint(0, 256, (2, SHAPE.frames, SHAPE.img_size, SHAPE.img_size, 3), dtype=torch.uint8)
    vectors = torch.from_numpy(model.predict(clips.numpy()))
    assert vectors.shape == (2, SHAPE.grid[0] * SHAPE.dim)
    with torch.no_grad():
        assert torch.allclose(vectors, reference.embed_time(to_model_input(clips)).flatten(1), atol=1e-6)
    assert not torch.allclose(vectors, torch.from_numpy(model.predict(clips.flip(1).numpy())), atol=1e-4)


def test_a_worse_model_cannot_displace_a_better_one(tmp_path, sqlite_store):
    """Two gate metrics, both margins set: the champion moves only when every check passes."""
    name = NAME + "-gate"
    cfg = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=name,
                      gate_metrics=["arrow_of_time.video", "speed.video"],
                      min_margin_over_champion=0.01, min_margin_over_frames=0.05)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    runs = iter(range(1, 100))

    # after the first, speed beats the champion's 0.62 by the margin unless a case says otherwise:
    # each case below fails exactly one check
    def run(gate: float, *, frames: float = 0.5, speed: float = 0.65) -> dict:
        i = next(runs)
        data, model, ev = make_inputs(tmp_path / f"in{i}", gate, step=i, frames=frames, speed=speed,
                                      speed_frames=0.41)
        result = register(cfg, data, model, ev, tmp_path / f"out{i}")
        v = client.get_model_version(name, result["version"])
        # the decision and its margins are on the version, exactly as registration.json says
        assert v.tags["gate.reason"] == result["reason"]
        assert v.tags["gate.decision"] == ("promote" if result["promoted"] else "challenger only")
        assert (float(v.tags["gate.min_margin_over_champion"]), float(v.tags["gate.min_margin_over_frames"])) \
            == (0.01, 0.05)
        assert result["gate"]["min_margin_over_champion"] == 0.01 and result["gate"]["min_margin_over_frames"] == 0.05
        return result

    good = run(0.70, speed=0.62)
    assert good["promoted"] and aliases(client, name) == {"champion": "1", "challenger": "1"}

    worse = run(0.66)
    assert not worse["promoted"] and aliases(client, name) == {"champion": "1", "challenger": "2"}
    assert worse["reason"].startswith("challenger only (champion stays v1): failed arrow_of_time.video | "
                                      "arrow_of_time.video 0.66 vs champion v1 0.7: gain -0.04, needs at least +0.01: fail")

    barely = run(0.705)  # better than the champion, but by less than min_margin_over_champion
    assert not barely["promoted"] and aliases(client, name) == {"champion": "1", "challenger": "3"}
    assert "failed arrow_of_time.video |" in barely["reason"] and "gain +0.005, needs at least +0.01: fail" in barely["reason"]

    # better than the champion by far, but its own bag of frames is nearly as good: no evidence of time
    leaky = run(0.80, frames=0.78)
    assert not leaky["promoted"] and aliases(client, name) == {"champion": "1", "challenger": "4"}
    check = leaky["gate"]["checks"]["arrow_of_time.video"]
    assert check["vs_champion"]["passed"] and not check["vs_frames"]["passed"]
    assert "vs champion v1 0.7: gain +0.1, needs at least +0.01: pass; vs bag of frames 0.78: gain +0.02, needs at least +0.05: fail" in leaky["reason"]
    assert leaky["reason"].startswith("challenger only (champion stays v1): failed arrow_of_time.video |")

    # better on arrow of time, worse on speed: all gate metrics must pass
    traded = run(0.80, speed=0.60)
    assert not traded["promoted"] and aliases(client, name) == {"champion": "1", "challenger": "5"}
    assert traded["reason"].startswith("challenger only (champion stays v1): failed speed.video |")

    best = run(0.80, speed=0.70)
    assert best["promoted"] and best["previous_champion_version"] == "1"
    assert aliases(client, name) == {"champion": "6", "challenger": "6"}
    assert best["reason"].startswith("promoted over v1 | arrow_of_time.video 0.8 vs champion v1 0.7: gain +0.1, needs at least +0.01")
    # the old champion keeps its version and evidence, only the alias moved
    old = client.get_model_version(name, "1")
    assert old.aliases == [] and old.tags["status"] == "ready" and old.tags["gate.decision"] == "promote"
    assert [str(v.version) for v in client.search_model_versions(f"name='{name}'", order_by=["version_number"])] \
        == ["1", "2", "3", "4", "5", "6"]


def test_the_gate_reads_the_champions_scores_from_its_run_and_fails_closed_without_them(tmp_path, sqlite_store):
    """The champion's version tags can be edited or deleted: the gate reads its registration run's first
    logged scores instead, and with none to read it fails closed, never promoting a weaker model."""
    name = NAME + "-tamper"
    cfg = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=name)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    first = register(cfg, *make_inputs(tmp_path / "in1", 0.97, step=1), tmp_path / "out1")
    assert first["promoted"]
    client.delete_model_version_tag(name, first["version"], "arrow_of_time.video")  # "nothing to compare"
    client.set_model_version_tag(name, first["version"], "score_keys", "")
    weak = register(cfg, *make_inputs(tmp_path / "in2", 0.6, step=2, frames=0.3), tmp_path / "out2")
    assert not weak["promoted"] and aliases(client, name)["champion"] == first["version"]
    assert "arrow_of_time.video 0.6 vs champion v1 0.97: gain -0.37" in weak["reason"]
    mlflow.tracking.MlflowClient(cfg.tracking.uri).log_metric(first["run_id"], "arrow_of_time.video", 0.1)  # later
    also_weak = register(cfg, *make_inputs(tmp_path / "in3", 0.6, step=3, frames=0.3), tmp_path / "out3")
    assert not also_weak["promoted"] and "vs champion v1 0.97" in also_weak["reason"]  # the first value counts
    # a champion evaluated without a gate metric's task has no score for it: no evidence, no promotion
    unscored = name + "-unscored"
    data, model, ev = make_inputs(tmp_path / "in4", 0.7, step=4)
    metrics = json.loads((ev / "scores.json").read_text())
    (ev / "scores.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "speed"}))
    assert register(make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=unscored),
                    data, model, ev, tmp_path / "out4")["promoted"]
    by_speed = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=unscored, gate_metrics=["speed.video"])
    new = register(by_speed, *make_inputs(tmp_path / "in5", 0.7, step=5, speed=0.99), tmp_path / "out5")
    assert not new["promoted"] and "vs champion v1: no recorded score to compare with, fail (closed" in new["reason"]


def test_failure_after_version_creation_rolls_back(tmp_path, sqlite_store):
    """A version created but not fully gated is deleted and the aliases stay where they were."""
    name = NAME + "-rollback"
    cfg = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=name)
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    first = register(cfg, data, model, ev, tmp_path / "out")
    client = MlflowClient(tracking_uri=first["tracking_uri"])

    def broken_card(version, decision):
        assert decision.promote  # it would have become champion...
        raise RuntimeError("disk full while rendering the card")

    with pytest.raises(RuntimeError, match="disk full"):
        registry.register_version(
            client, name, logged_model_uri=first["logged_model_uri"], model_id=None, run_id=first["run_id"],
            tags={"arrow_of_time.video": "0.99", "status": "registering"}, policy=Policy(("arrow_of_time.video",)),
            values={"arrow_of_time.video": 0.99}, frames={"arrow_of_time.video": 0.5}, card=broken_card)
    # ...but the half-made v2 is gone and v1 is still champion and challenger
    assert [str(v.version) for v in client.search_model_versions(f"name='{name}'")] == ["1"]
    assert aliases(client, name) == {"champion": "1", "challenger": "1"}


_EMBED_IN_FRESH_VENV = """
import importlib.util, sys
# a fresh virtualenv: videossl is not installed, the model brings it (code_paths)
assert importlib.util.find_spec("videossl") is None, "videossl is importable: the test would prove nothing"
import mlflow, numpy as np
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
np.save(sys.argv[4], model.predict(np.load(sys.argv[3])))
"""


def test_the_registered_model_embeds_in_a_fresh_virtualenv(tmp_path, sqlite_store):
    """What a user outside this project does: a new virtualenv with only the model's logged
    requirements, `mlflow.pyfunc.load_model`, uint8 frames in, the same embedding as `videossl embed`."""
    cfg = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name="standalone-encoder",
                      min_margin_over_champion=0, min_margin_over_frames=0)
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    result = register(cfg, data, model, ev, tmp_path / "out")
    local = Path(mlflow.artifacts.download_artifacts(result["logged_model_uri"], tracking_uri=sqlite_store,
                                                     dst_path=str(tmp_path / "dl")))
    requirements = local / "requirements.txt"
    names = {r.split("==")[0] for r in requirements.read_text().split()}
    assert names >= {"mlflow", "torch", "safetensors", "numpy", "pydantic", "PyYAML"} and "videossl" not in names
    assert (local / "code" / "videossl" / "clip_embedder.py").is_file()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    python = venv / "bin" / "python"
    # --no-compile: byte-compiling mlflow and torch would double the install time and prove nothing
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", "-r", str(requirements)],
                         capture_output=True, text=True, timeout=1800)
    assert pip.returncode == 0, pip.stderr[-3000:]

    clips = np.random.default_rng(0).integers(0, 256, (3, SHAPE.frames, SHAPE.img_size, SHAPE.img_size, 3),
                                              dtype=np.uint8)
    clips[2] = clips[0][::-1]  # a clip and its reverse
    np.save(tmp_path / "clips.npy", clips)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), "-c", _EMBED_IN_FRESH_VENV, sqlite_store, result["model_uri"],
                           str(tmp_path / "clips.npy"), str(tmp_path / "vectors.npy")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    vectors = np.load(tmp_path / "vectors.npy")
    assert vectors.shape == (3, SHAPE.grid[0] * SHAPE.dim)
    np.testing.assert_allclose(vectors, load_encoder(str(model / "encoder.pt")).embed_clips(clips), atol=1e-5)
    assert not np.allclose(vectors[0], vectors[2], atol=1e-4)  # time order kept


def test_the_registered_model_unpickles_nothing_and_refuses_swapped_weights(tmp_path, sqlite_store):
    """The hostile cases of a writable artifact store: weights overwritten in the logged model (with its
    own record edited to match), or the logged checkpoint replaced with random weights. Every load
    (`mlflow.pyfunc.load_model`, `videossl embed --model models:/...`) refuses them, naming both digests."""
    cfg = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name="tamper-encoder",
                      min_margin_over_champion=0, min_margin_over_frames=0)
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    result = register(cfg, data, model, ev, tmp_path / "out")
    registered = json.loads((tmp_path / "out" / "submitted.json").read_text())["encoder_sha256"]
    client = MlflowClient(tracking_uri=sqlite_store)
    assert client.get_run(result["run_id"]).data.params[registered_model.DIGEST_PARAM] == registered

    # no pickle anywhere in the logged model: a pyfunc with a loader module, safetensors and JSON
    logged = client.get_logged_model(result["logged_model_uri"].removeprefix("models:/"))
    [folder] = [p.parent for p in Path(urllib.parse.urlparse(logged.artifact_location).path).rglob(registered_model.WEIGHTS)]
    root = folder.parents[1]  # MLflow keeps the data folder in <model>/data/
    mlmodel = (root / "MLmodel").read_text()
    assert "loader_module: videossl.registered_model" in mlmodel and "pytorch" not in mlmodel
    assert not [p for p in root.rglob("*") if p.suffix in (".pkl", ".pth", ".pt", ".pickle")]
    mlflow.set_tracking_uri(sqlite_store)
    uri = f"models:/tamper-encoder/{result['version']}"
    assert mlflow.pyfunc.load_model(uri).predict(
        np.zeros((1, SHAPE.frames, SHAPE.img_size, SHAPE.img_size, 3), dtype=np.uint8)).shape == (1, SHAPE.grid[0] * SHAPE.dim)

    # weights swapped, the folder's own record edited to match: the registration record still refuses them
    from safetensors.torch import save_file

    torch.manual_seed(99)
    random = VideoViT(SHAPE).state_dict()
    save_file(random, folder / registered_model.WEIGHTS)
    spec = json.loads((folder / registered_model.SPEC).read_text())
    (folder / registered_model.SPEC).write_text(json.dumps({**spec, "weights_sha256": state_digest(random)}))
    with pytest.raises(registered_model.TamperedModel, match=rf"weights sha256 {state_digest(random)}, but the "
                                                             rf"registration record says {registered}"):
        mlflow.pyfunc.load_model(uri)

    # the logged checkpoint that `videossl embed --model models:/...` reads, swapped for random weights
    assert embed.load_encoder(uri, sqlite_store).model is not None
    checkpoint = Path(urllib.parse.urlparse(client.get_run(result["run_id"]).info.artifact_uri).path) / \
        embed.CHECKPOINT_ARTIFACT
    save_checkpoint({"shape": SHAPE.as_dict(), "encoder": random, "step": 10, "variant": "video"}, checkpoint)
    with pytest.raises(embed.EmbedError, match=rf"holds weights sha256 {state_digest(random)}, but its registration "
                                               rf"recorded {registered}"):
        embed.load_encoder(uri, sqlite_store)


def test_a_dvc_experiment_registers_only_when_asked(tmp_path, sqlite_store, monkeypatch):
    name = "experiment-encoder"
    monkeypatch.setenv("DVC_EXP_NAME", "exp-lr-sweep")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123456789abcdef0123456789abcdef01234567")
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    cfg = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=name)
    skipped = register(cfg, data, model, ev, tmp_path / "out")
    assert skipped["registered"] is False and "exp-lr-sweep" in skipped["reason"]
    assert json.loads((tmp_path / "out" / "registration.json").read_text()) == skipped
    assert (tmp_path / "out" / "model_card.md").read_text().startswith(f"# {name}: not registered")
    client = MlflowClient(tracking_uri=sqlite_store)
    assert not client.search_model_versions(f"name='{name}'")
    asked = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=name, in_experiments=True)
    result = register(asked, data, model, ev, tmp_path / "out2")
    assert result["registered"] is True
    version = client.get_model_version(name, result["version"])
    assert version.tags["dvc.experiment"] == "exp-lr-sweep"
    assert version.tags["dvc.baseline_rev"] == "0123456789abcdef0123456789abcdef01234567"
    assert client.get_run(result["run_id"]).data.tags["dvc.experiment"] == "exp-lr-sweep"


# ----------------------------------------------------------------------------------------------
# clear errors, before MLflow is touched


def test_missing_gate_metric_names_the_key(tmp_path):
    db = tmp_path / "mlruns.db"
    cfg = make_config(f"sqlite:///{db}", str(tmp_path / "mlartifacts"),
                      gate_metrics=["arrow_of_time.video", "speed.video"])
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    metrics = json.loads((ev / "scores.json").read_text())
    del metrics["speed"]["video"]
    (ev / "scores.json").write_text(json.dumps(metrics))
    with pytest.raises(RegisterError, match=r"gate metric 'speed\.video' not found in .*scores\.json") as e:
        register(cfg, data, model, ev, tmp_path / "out")
    assert "missing key 'video'" in str(e.value)
    # the bag-of-frames baseline the gate compares with is required too
    metrics["speed"]["video"] = 0.6
    metrics["speed"]["frames"] = "n/a"
    (ev / "scores.json").write_text(json.dumps(metrics))
    with pytest.raises(RegisterError, match=r"baseline of gate metric speed\.video: 'speed\.frames' in .* is not a "
                                            r"number: 'n/a'"):
        register(cfg, data, model, ev, tmp_path / "out")

    (ev / "scores.json").unlink()
    with pytest.raises(RegisterError, match=r"scores not found: .*eval/scores\.json"):
        register(cfg, data, model, ev, tmp_path / "out")
    (model / "encoder.pt").unlink()
    (ev / "scores.json").write_text(json.dumps({"arrow_of_time": {"video": 0.7, "frames": 0.5},
                                                 "speed": {"video": 0.5, "frames": 0.4}}))
    with pytest.raises(RegisterError, match=r"encoder checkpoint not found: .*model/encoder\.pt"):
        register(cfg, data, model, ev, tmp_path / "out")
    # nothing was registered or written: the inputs are checked first
    assert not db.exists() and not (tmp_path / "out").exists()


def _register_one(args: tuple[str, str, float]) -> str:
    """One registration in its own process (tests/integration/test_registry.py's helpers, spawned)."""
    uri, root, score = args
    data, model, ev = make_inputs(Path(root), score, step=int(score * 100))
    return register(make_config(uri, str(Path(root).parent / "mlartifacts")), data, model, ev, Path(root) / "out")["version"]


def test_concurrent_registrations_leave_the_best_model_champion(tmp_path):
    """Four registrations at once on a store none of them has created yet: each gate reads the
    champion the previous one left, so the best model ends as champion, and the store is whole."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path}/fresh.db"
    scores = [0.70, 0.80, 0.60, 0.75]
    with multiprocessing.get_context("spawn").Pool(len(scores)) as pool:
        versions = pool.map(_register_one, [(uri, str(tmp_path / f"in{i}"), s) for i, s in enumerate(scores)])
    client = MlflowClient(tracking_uri=uri)
    assert sorted(versions, key=int) == ["1", "2", "3", "4"]
    best = versions[scores.index(max(scores))]
    assert aliases(client, NAME)["champion"] == best


def test_register_refuses_before_touching_the_registry(tmp_path):
    """Scores of another dataset, or outputs it cannot write: an error, and no run, version or alias."""
    db = tmp_path / "mlruns.db"
    cfg = make_config(f"sqlite:///{db}", str(tmp_path / "mlartifacts"))
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    metrics = json.loads((ev / "scores.json").read_text())
    (ev / "scores.json").write_text(json.dumps({**metrics, "dataset_digest": "f" * 64}))
    with pytest.raises(RegisterError, match=r"measured on dataset ffffffffffff, but .*ingest\.json is dataset"):
        register(cfg, data, model, ev, tmp_path / "out")
    # scores of other weights (random ones put where the scored model was), scores that do not say whose
    # they are, an interval that does not hold its score: refused, before the registry is touched
    torch.manual_seed(99)
    save_checkpoint({"shape": SHAPE.as_dict(), "encoder": VideoViT(SHAPE).state_dict(), "step": 10, "variant": "video"},
                    tmp_path / "random.pt")
    real = (model / "encoder.pt").read_bytes()
    (model / "encoder.pt").write_bytes((tmp_path / "random.pt").read_bytes())
    (ev / "scores.json").write_text(json.dumps(metrics))
    with pytest.raises(RegisterError, match=r"scored the video encoder with weights sha256 [0-9a-f]{16}\.\.\., but "
                                            r".*encoder\.pt holds weights sha256 [0-9a-f]{16}"):
        register(cfg, data, model, ev, tmp_path / "out")
    (model / "encoder.pt").write_bytes(real)
    (ev / "scores.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != SCORED_WEIGHTS}))
    with pytest.raises(RegisterError, match="does not name the weights it scored"):
        register(cfg, data, model, ev, tmp_path / "out")
    lying = {**metrics, "arrow_of_time": {**metrics["arrow_of_time"], "video": 0.3, "video_ci_low": 0.96}}
    (ev / "scores.json").write_text(json.dumps(lying))
    with pytest.raises(RegisterError, match=r"'arrow_of_time.video' in .* is 0.3 with an interval \[0.96, 0.75\]"):
        register(cfg, data, model, ev, tmp_path / "out")
    (ev / "scores.json").write_text(json.dumps(metrics))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    with pytest.raises(RegisterError, match=r"cannot write the registration to .*blocked"):
        register(cfg, data, model, ev, blocked / "out")
    assert not db.exists()


# ----------------------------------------------------------------------------------------------
# a real tracking server


def test_register_through_a_tracking_server(tmp_path, mlflow_server):
    # mlflow-artifacts:/// makes the experiment's artifacts go through the server's proxy
    cfg = make_config(mlflow_server["url"], "mlflow-artifacts:///videossl-test")
    data, model, ev = make_inputs(tmp_path / "in", 0.66, step=42)
    r1 = register(cfg, data, model, ev, tmp_path / "out1")
    data, model, ev = make_inputs(tmp_path / "in2", 0.60, step=43)
    r2 = register(cfg, data, model, ev, tmp_path / "out2")

    assert r1["tracking_uri"] == mlflow_server["url"] and r1["promoted"] and not r2["promoted"]
    client = MlflowClient(tracking_uri=mlflow_server["url"])
    assert aliases(client, NAME) == {"champion": "1", "challenger": "2"}
    v1 = client.get_model_version(NAME, "1")
    assert v1.tags["checkpoint_step"] == "42" and v1.tags["arrow_of_time.video"] == "0.66"
    assert sorted(v1.aliases) == ["champion"]
    both = registry.champion_and_challenger(client, NAME)
    assert (both["champion"].version, both["challenger"].version) == ("1", "2")
    # the model files went through the server to its --artifacts-destination
    stored = list((mlflow_server["root"] / "art").rglob(registered_model.WEIGHTS))
    assert len(stored) == 2
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    out = model.predict(np.zeros((1, SHAPE.frames, SHAPE.img_size, SHAPE.img_size, 3), dtype=np.uint8))
    assert out.shape == (1, SHAPE.grid[0] * SHAPE.dim) and np.isfinite(out).all()

    # the registered-model page's data, read as the UI reads it: the server's REST API
    def rest(path: str, **query) -> dict:
        url = f"{mlflow_server['url']}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=60) as r:
            return json.loads(r.read())

    version = rest("model-versions/get", name=NAME, version="1")["model_version"]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert len(tags) <= 30 and tags["arrow_of_time.video"] == "0.66" and tags["gate.decision"] == "promote"
    assert tags["dataset_digest"] == "ab" * 32 and tags["git_commit"] and tags["status"] == "ready"
    assert version["aliases"] == ["champion"]
    assert version["description"].startswith(f"**{NAME} v1**: a self-supervised video encoder, **champion**.")
    # lineage: version -> its run (commit, dataset input) -> its card; version <-> its logged model
    run = rest("runs/get", run_id=version["run_id"])["run"]
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["git_commit"] == tags["git_commit"]
    [dataset_input] = run["inputs"]["dataset_inputs"]
    assert {t["key"]: t["value"] for t in dataset_input["tags"]}["dataset_digest"] == "ab" * 32
    assert dataset_input["dataset"]["digest"] == ("ab" * 32)[:12]
    card = mlflow.artifacts.load_text(f"runs:/{version['run_id']}/model_card.md")
    assert card.startswith(f"# Model card: {NAME} v1") and "## Limits" in card
    assert version["source"].startswith("models:/")  # the logged model (MLflow 3), not a bare artifact path
    logged = client.get_logged_model(version["source"].removeprefix("models:/"))
    links = json.loads(logged.tags[registry.LOGGED_MODEL_VERSIONS_TAG])
    assert [(v["name"], str(v["version"])) for v in links] == [(NAME, "1")]  # linked once (the server links it too)


_REGISTER_IN_ITS_OWN_HOME = """
import sys
from pathlib import Path
from tests.integration.test_registry import make_config, make_inputs
from videossl.steps.register import register
uri, root, score, name = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
data, model, ev = make_inputs(root, score, step=int(root.name[-1]))
result = register(make_config(uri, "unused", model_name=name), data, model, ev, root / "out")
print("PROMOTED" if result["promoted"] else "NOT-PROMOTED", result["version"])
"""


def test_registrations_on_two_machines_cannot_both_promote(tmp_path, mlflow_server):
    """Two register processes that share only the tracking server (separate homes, so no local lock
    folder in common, as two KFP pods): both beat the champion, but they gate one after the other, so
    the second is compared with the first and the two cannot both be promoted."""
    name = "two-machines-encoder"
    first = register(make_config(mlflow_server["url"], "unused", model_name=name),
                     *make_inputs(tmp_path / "champion", 0.70), tmp_path / "out0")
    assert first["promoted"]
    procs = []
    for i in (1, 2):
        home = tmp_path / f"home{i}"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
               "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        procs.append(subprocess.Popen([sys.executable, "-c", _REGISTER_IN_ITS_OWN_HOME, mlflow_server["url"],
                                       str(tmp_path / f"machine{i}"), "0.80", name],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    decisions = sorted(out.split()[-2] for out, _ in outs)
    assert decisions == ["NOT-PROMOTED", "PROMOTED"], outs
    client = MlflowClient(tracking_uri=mlflow_server["url"])
    promoted = next(out.split()[-1] for out, _ in outs if "NOT-" not in out)
    assert aliases(client, name)["champion"] == promoted
    assert not client.search_registered_models(f"name='{name}{registry.LOCK_SUFFIX}'")  # released


def test_a_held_registration_lock_is_waited_for_and_a_dead_holders_is_broken(tmp_path, sqlite_store):
    name = "locked-encoder"
    client = MlflowClient(tracking_uri=sqlite_store)
    client.create_registered_model(name + registry.LOCK_SUFFIX, description='{"holder": "pod-a pid 7"}')
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    waits = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=name, lock_wait_s=1)
    with pytest.raises(RegisterError, match=r"registration lock of locked-encoder .* is held by .*pod-a pid 7.*"
                                            r"waited 1 s \(register.lock_wait_s\)"):
        register(waits, data, model, ev, tmp_path / "out")
    assert client.get_registered_model(name + registry.LOCK_SUFFIX)  # not ours to delete
    assert not client.search_model_versions(f"name='{name}'")  # nothing half-registered
    time.sleep(1.5)  # the holder never comes back: its lock is stale after lock_stale_s
    breaks = make_config(sqlite_store, str(tmp_path / "mlartifacts"), model_name=name, lock_stale_s=1)
    assert register(breaks, data, model, ev, tmp_path / "out")["promoted"]
    assert not client.search_registered_models(f"name='{name}{registry.LOCK_SUFFIX}'")


def test_the_same_model_registered_twice_is_recognised_not_versioned_again(tmp_path):
    """Two runners (dvc repro, the KFP DAG) that produce the same weights with the same scores register
    one version: the second names it. The same weights scored differently are a new version."""
    cfg = make_config(f"sqlite:///{tmp_path / 'mlruns.db'}", str(tmp_path / "mlartifacts"))
    data, model, ev = make_inputs(tmp_path / "in", 0.7)
    first = register(cfg, data, model, ev, tmp_path / "out-1")
    again = register(cfg, data, model, ev, tmp_path / "out-2")
    assert again["same_model"] and again["version"] == first["version"] == "1"
    assert again["aliases"] == first["aliases"] and "the same model as v1" in again["reason"]
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert [str(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == ["1"]
    submitted = [json.loads((tmp_path / o / "submitted.json").read_text()) for o in ("out-1", "out-2")]
    assert submitted[0] == submitted[1]  # dvc sees the same bytes for the same model

    scores = json.loads((ev / "scores.json").read_text())
    scores["speed"]["video"] = 0.61  # the same weights, scored again differently
    (ev / "scores.json").write_text(json.dumps(scores))
    rescored = register(cfg, data, model, ev, tmp_path / "out-3")
    assert rescored["version"] == "2" and "same_model" not in rescored
