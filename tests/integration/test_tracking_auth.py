"""The tracking server as the cluster runs it: MLflow's basic-auth app with k8s/base/basic_auth.ini,
the admin user from the environment (the Secret's keys), on loopback. Anonymous calls are refused;
videossl's client logs in with MLFLOW_TRACKING_USERNAME / _PASSWORD; a wrong password or a server
that never answers fails the step in one line."""
from __future__ import annotations

import base64
import configparser
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.servers import closed_address, free_port, running_server
from videossl.config import TrackingConfig
from videossl.errors import StepError
from videossl import tracking

ROOT = Path(__file__).resolve().parents[2]
ADMIN, PASSWORD = "videossl-admin", "a-long-test-password-1"


def deployment_env() -> dict[str, dict]:
    """name -> env entry of the MLflow container in k8s/base/mlflow.yaml."""
    (deploy,) = [d for d in yaml.safe_load_all((ROOT / "k8s/base/mlflow.yaml").read_text())
                 if d and d["kind"] == "Deployment"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return container, {e["name"]: e for e in container["env"]}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    container, env_entries = deployment_env()
    assert "--app-name=basic-auth" in container["args"]
    # the shipped auth settings, with the user store moved from the pod's volume to this folder
    ini = configparser.ConfigParser()
    ini.read(ROOT / "k8s/base/basic_auth.ini")
    assert ini["mlflow"]["database_uri"].startswith("sqlite:////mlflow/")
    ini["mlflow"]["database_uri"] = f"sqlite:///{root / 'basic_auth.db'}"
    with open(root / "basic_auth.ini", "w") as f:
        ini.write(f)
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    argv = [str(mlflow_bin), "server", "--app-name", "basic-auth", "--backend-store-uri",
            f"sqlite:///{root / 'db.sqlite'}", "--artifacts-destination", str(root / "art"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # the variables the Deployment sets, with the values its Secret would hold; nothing from the shell
    secret = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": PASSWORD,
              "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key"}
    env = {name: secret[env_entries[name]["valueFrom"]["secretKeyRef"]["key"]]
           for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(root / "basic_auth.ini")
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job consumers: fewer processes, faster boot
    with running_server("mlflow-auth", argv, f"http://127.0.0.1:{port}/health", root, env=env,
                        drop_env=("MLFLOW_",)) as server:
        yield f"http://127.0.0.1:{port}", server


def api(url: str, path: str, user: str | None = None, password: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}")
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {}


def test_the_deployment_takes_every_credential_from_the_mlflow_secret():
    container, env = deployment_env()
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "videossl-mlflow", name
        assert "optional" not in env[name]["valueFrom"]["secretKeyRef"], name
    assert "password" not in (ROOT / "k8s/base/basic_auth.ini").read_text().split("[mlflow]")[1].split("#")[0]
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith(
        next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "auth"))


def test_anonymous_and_wrong_password_calls_are_refused(auth_server):
    url, _ = auth_server
    assert api(url, "experiments/search?max_results=1")[0] == 401
    assert api(url, "experiments/search?max_results=1", ADMIN, "wrong")[0] == 401
    assert api(url, "experiments/search?max_results=1", ADMIN, PASSWORD)[0] == 200


def test_videossl_logs_in_with_the_tracking_credentials(auth_server, monkeypatch, tmp_path):
    import mlflow

    url, _ = auth_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    cfg = TrackingConfig(uri=url, artifacts=None, experiment="auth-test")
    with tracking.run(cfg, "auth-check") as active:
        mlflow.log_metric("answer", 42.0)
    status, body = api(url, f"runs/get?run_id={active.info.run_id}", ADMIN, PASSWORD)
    assert status == 200
    assert {m["key"]: m["value"] for m in body["run"]["data"]["metrics"]} == {"answer": 42.0}


def test_a_refused_client_fails_in_one_line_naming_the_variables(auth_server, monkeypatch):
    url, _ = auth_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(StepError) as e:
        tracking.configure(TrackingConfig(uri=url, artifacts=None, experiment="auth-test"))
    message = str(e.value)
    assert "\n" not in message and "MLFLOW_TRACKING_USERNAME" in message and "refused" in message


def test_a_server_that_never_answers_fails_in_one_line_naming_the_key():
    uri = f"http://user:secret@{closed_address()}"
    with pytest.raises(StepError) as e:
        tracking.check_server(uri, wait_s=2)
    message = str(e.value)
    assert "\n" not in message and "tracking.uri" in message and "/health" in message
    assert "secret" not in message  # credentials in the URI are redacted
