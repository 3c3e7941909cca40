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


def test_the_deployment_takes_every_credential_from_the_admin_secret():
    """The admin's login is the server's and the mlflow-access Job's only; the Job grants on the
    experiment and model that params.yaml names."""
    container, env = deployment_env()
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "videossl-mlflow-admin", name
        assert "optional" not in env[name]["valueFrom"]["secretKeyRef"], name
    assert "password" not in (ROOT / "k8s/base/basic_auth.ini").read_text().split("[mlflow]")[1].split("#")[0]
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith(
        next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "auth"))
    from videossl.config import load_config

    cfg, access = load_config(ROOT / "params.yaml"), load_config(ROOT / "k8s/base/access-params.yaml")
    assert (access.tracking.experiment, access.register.model_name) == (cfg.tracking.experiment,
                                                                          cfg.register.model_name)
    assert cfg.cluster.secrets.mlflow != cfg.cluster.secrets.mlflow_register
    (job,) = [d for d in yaml.safe_load_all((ROOT / "k8s/base/mlflow-access.yaml").read_text()) if d]
    (grant,) = job["spec"]["template"]["spec"]["containers"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in grant["env"] if "valueFrom" in e}
    assert secrets["MLFLOW_TRACKING_PASSWORD"] == "videossl-mlflow-admin"
    assert secrets["VIDEOSSL_RUNS_PASSWORD"] == cfg.cluster.secrets.mlflow
    assert secrets["VIDEOSSL_REGISTER_PASSWORD"] == cfg.cluster.secrets.mlflow_register
    def secret_refs(node):  # every Secret a manifest mounts (secretKeyRef, secretRef)
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("secretKeyRef", "secretRef") and isinstance(v, dict):
                    yield v.get("name")
                yield from secret_refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from secret_refs(v)

    mounting = {(d["kind"], d["metadata"]["name"]) for f in (ROOT / "k8s").rglob("*.yaml")
                for d in yaml.safe_load_all(f.read_text()) if d and "videossl-mlflow-admin" in secret_refs(d)}
    assert mounting == {("Deployment", "mlflow"), ("Job", "mlflow-access")}  # the server and the grant only


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


def test_each_role_can_do_only_what_its_steps_do(auth_server, monkeypatch, tmp_path, capsys):
    """`videossl grant-access` as the admin, then: the runs user (pretrain, probe-eval) logs runs but
    is refused every write to the registered model; the register user logs its run and gates: the
    registry lock, the version, the aliases."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from videossl import cli, registered_model, registry
    from videossl.cluster import access
    from videossl.gate import Policy
    from videossl.cluster.access import ROLE_ENV
    from videossl.config import Config

    url, _ = auth_server
    users = {"runs": ("videossl-runs", "runs-password-1"), "register": ("videossl-register", "register-password-1")}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tracking": {"uri": url, "experiment": "roles", "artifacts": None},
                                      "register": {"model_name": "roles-encoder", "gate_metrics": ["arrow_of_time.video"]}}))
    # the Job's command line, in this process: the admin's login and each role's, as the Job maps its Secrets
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    for role, (user, password) in users.items():
        monkeypatch.setenv(ROLE_ENV[role][0], user)
        monkeypatch.setenv(ROLE_ENV[role][1], password)
    assert cli.main(["grant-access", "--params", str(params)]) == 0
    granted = json.loads(capsys.readouterr().out)
    experiment = api(url, "experiments/get-by-name?experiment_name=roles", ADMIN, PASSWORD)[1]["experiment"]["experiment_id"]
    assert granted == {"runs": {f"experiment {experiment}": "EDIT"},
                       "register": {f"experiment {experiment}": "EDIT", "registered_model roles-encoder": "MANAGE"}}
    # idempotent: granting again (as the Job does after a password rotation) changes nothing and does not fail
    assert access.grant(url, "roles", "roles-encoder", {r: access.Role(*users[r]) for r in users}) == granted
    experiment = api(url, "experiments/get-by-name?experiment_name=roles", ADMIN, PASSWORD)[1]["experiment"]["experiment_id"]
    assert granted == {"runs": {f"experiment {experiment}": "EDIT"},
                       "register": {f"experiment {experiment}": "EDIT", "registered_model roles-encoder": "MANAGE"}}

    def as_user(role: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", users[role][0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", users[role][1])
        return MlflowClient(tracking_uri=url, registry_uri=url)

    import mlflow

    cfg = Config.model_validate(yaml.safe_load(params.read_text()))
    runs = as_user("runs")
    with tracking.run(cfg.tracking, "pretrain") as active:  # the runs user logs its steps' runs
        mlflow.log_metric("loss", 1.0)
    assert runs.get_run(active.info.run_id).data.metrics == {"loss": 1.0}
    assert runs.get_registered_model("roles-encoder").name == "roles-encoder"  # reads the registry
    for write in (lambda: runs.create_model_version("roles-encoder", "models:/m-nope", run_id=active.info.run_id),
                  lambda: runs.set_registered_model_alias("roles-encoder", "champion", "1"),
                  lambda: runs.delete_registered_model("roles-encoder")):
        with pytest.raises(MlflowException) as e:
            write()
        assert e.value.error_code == "PERMISSION_DENIED", e.value
    assert not as_user("register").search_model_versions("name='roles-encoder'")

    # the register user does what the register step does to the registry (its run, the registry lock, the
    # version with its tags, the aliases): registry.register_version, as steps/register.py calls it. The
    # whole step is not run here: each of its ~100 model-file uploads is hashed by the auth app.
    writer = as_user("register")
    with tracking.run(cfg.tracking, "register") as reg_run:
        mlflow.log_param(registered_model.DIGEST_PARAM, "ab" * 32)
    result = registry.register_version(
        writer, "roles-encoder", logged_model_uri=f"runs:/{reg_run.info.run_id}/model", model_id=None,
        run_id=reg_run.info.run_id, tags={"arrow_of_time.video": "0.7"}, policy=Policy(("arrow_of_time.video",)),
        values={"arrow_of_time.video": 0.7}, frames={"arrow_of_time.video": 0.5})
    assert result.decision.promote and result.version == "1" and result.aliases == ["challenger", "champion"]
    assert MlflowClient(tracking_uri=url).get_model_version_by_alias("roles-encoder", "champion").version == "1"
