"""The cluster side of the KFP layer: what the compiled IR asks of Kubernetes (images, resources, GPUs,
node placement, Secrets, retries, caching) as params decide it, and `videossl pipeline submit`.

Submit talks to a tiny HTTP server on loopback that plays the KFP API for the four calls kfp.Client
makes (healthz, list/create experiment, create run) and records them: the KFP API server cannot run
here, and this is the one stand-in. Everything else is real: the compiler, kfp.Client, its HTTP.
"""
import difflib
import hashlib
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from pipelines.videossl_pipeline import params_text
from videossl.pipeline_runs import compile_pipeline
from videossl.cli import main
from videossl.cluster.jobs import IMAGE_USER
from videossl.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
TASK_OF_STEP = {"ingest": "ingest", "pretrain": "pretrain", "ceiling": "ceiling", "probe_eval": "probe-eval",
                "register": "register"}
LOGS_TO_MLFLOW = ("pretrain", "probe_eval", "register")
IMAGE = "registry.example.com/team/videossl-pipeline:1.2.3"
# Cluster params unlike the defaults, so every value found in the IR can only have come from them.
CLUSTER = [
    f"cluster.image={IMAGE}",
    "cluster.secrets.s3=team-s3-credentials",
    "cluster.secrets.mlflow=team-mlflow-credentials",
    "cluster.secrets.mlflow_register=team-mlflow-registry-writer",
    "cluster.secrets.s3_steps={ingest: team-s3-sources-reader}",
    "cluster.resources.ingest={cpu: '3', memory: 5Gi, retries: 4}",
    "cluster.resources.pretrain={cpu: 500m, memory: 1Gi, retries: 0}",
    "cluster.resources.probe_eval={cpu: '6', memory: 12Gi, retries: 1}",
    "cluster.resources.register={cpu: '1', memory: 3Gi, retries: 2}",
    "cluster.job.node_selector={nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}",
    "cluster.job.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
    "cluster.job.gpus_per_node=4",
    "cluster.job.cpu='24'",
    "cluster.job.memory=200Gi",
    "tracking.uri=null",
    "tracking.artifacts=null",
]
# Credentials in this process's environment while compiling: none may end up in the YAML.
FAKE_SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID0000000", "AWS_SECRET_ACCESS_KEY": "fake/secret+key/value0000",
                "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-0000"}


def _cfg(*extra: str):
    return parse_config((REPO / "params.yaml").read_text(), CLUSTER + list(extra))


def _compile(tmp_path: Path, monkeypatch, *extra: str) -> tuple[dict, dict, str, object]:
    for k, v in FAKE_SECRETS.items():
        monkeypatch.setenv(k, v)
    cfg = _cfg(*extra)
    text = Path(compile_pipeline(cfg, tmp_path / "pipeline.yaml")).read_text()
    spec, platform = yaml.safe_load_all(text)
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], text, cfg


def _container(spec: dict, step: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{TASK_OF_STEP[step]}"]["container"]


def test_ir_trainjob_mode_takes_everything_from_params(tmp_path, monkeypatch):
    spec, k8s, text, cfg = _compile(tmp_path, monkeypatch, "cluster.job.launcher=trainjob")
    tasks = spec["root"]["dag"]["tasks"]

    # the DAG: split-params -> ingest -> (pretrain, ceiling) -> probe-eval -> register
    assert {t: set(v.get("dependentTasks", [])) for t, v in tasks.items()} == {
        "split-params": set(), "ingest": {"split-params"}, "pretrain": {"split-params", "ingest"},
        "ceiling": {"split-params", "ingest"}, "probe-eval": {"split-params", "ingest", "pretrain", "ceiling"},
        "register": {"split-params", "ingest", "pretrain", "probe-eval"}}
    # the split needs no credentials and runs in a small pod
    assert set(k8s["exec-split-params"]) == {"securityContext"}
    split_res = spec["deploymentSpec"]["executors"]["exec-split-params"]["container"]["resources"]
    assert split_res["resourceCpuLimit"] == cfg.cluster.resources["split_params"].cpu

    for step, task in TASK_OF_STEP.items():
        c, want = _container(spec, step), cfg.cluster.resources[step]
        assert c["image"] == IMAGE
        assert "env" not in c  # nothing set as a literal environment variable
        res = c["resources"]
        assert res["resourceCpuRequest"] == res["resourceCpuLimit"] == want.cpu, step
        assert res["resourceMemoryRequest"] == res["resourceMemoryLimit"] == want.memory, step
        assert "accelerator" not in res, step  # trainjob: the job's pods get the GPUs, not this DAG's
        # retries from params (pretrain: 0 -> no policy: a failed launcher must not submit a second job)
        retry = tasks[task].get("retryPolicy")
        assert (retry or {}).get("maxRetryCount", 0) == want.retries, step
        if retry:
            assert retry["backoffDuration"] == "60s" and retry["backoffFactor"] == 2.0
        # caching: every step but register (it writes to the registry)
        assert tasks[task]["cachingOptions"].get("enableCache", False) is (step != "register"), step

        # Secrets as env: names from params, keys mapped to the variables boto3 / mlflow read
        envs = {(s["secretName"], s.get("optional", False)): {m["secretKey"]: m["envVar"] for m in s["keyToEnv"]}
                for s in k8s[f"exec-{task}"]["secretAsEnv"]}
        s3 = "team-s3-sources-reader" if step == "ingest" else "team-s3-credentials"  # s3_steps
        want_envs = {(s3, False): {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                   "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
                     (s3, True): {"AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}}
        if step in LOGS_TO_MLFLOW:
            # the tracking server authenticates every client: its user is required; only register's may
            # write the registry (videossl.cluster.access)
            login = "team-mlflow-registry-writer" if step == "register" else "team-mlflow-credentials"
            want_envs |= {(login, False): {k: k for k in (
                "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}}
        assert envs == want_envs, step
        if step in LOGS_TO_MLFLOW:  # their MLflow runs are children of one parent run per execution
            assert k8s[f"exec-{task}"]["fieldPathAsEnv"] == [
                {"fieldPath": "metadata.labels['workflows.argoproj.io/workflow']", "name": "VIDEOSSL_PIPELINE_RUN"}]

    # the pretrain pod is a light launcher: no GPU node placement, no deadline of its own
    assert set(k8s["exec-pretrain"]) == {"secretAsEnv", "securityContext", "fieldPathAsEnv"}
    assert tasks["pretrain"]["inputs"]["parameters"]["launcher"] == {"runtimeValue": {"constant": "trainjob"}}
    # the defaults of the run's parameters are these params
    defaults = {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert parse_config(defaults["params"]) == cfg
    assert defaults["root"] == cfg.cluster.root and defaults["data_version"] == ""

    for value in FAKE_SECRETS.values():
        assert value not in text


def test_ir_in_pod_training_requests_gpus_and_gpu_nodes_for_pretrain_only(tmp_path, monkeypatch):
    spec, k8s, text, cfg = _compile(tmp_path, monkeypatch, "cluster.job.launcher=none")
    res = _container(spec, "pretrain")["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "4"
    # the pod is the trainer: sized like one (cluster.job), not like the launcher (cluster.resources.pretrain)
    assert res["resourceCpuLimit"] == "24" and res["resourceMemoryLimit"] == "200Gi"
    pre = k8s["exec-pretrain"]
    assert pre["nodeSelector"] == {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
    assert pre["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert int(pre["activeDeadlineSeconds"]) == cfg.cluster.job.timeout_s
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["pretrain"]["inputs"]["parameters"]["launcher"] == {"runtimeValue": {"constant": "none"}}
    for step in ("ingest", "ceiling", "probe_eval", "register"):  # CPU pods on ordinary nodes
        assert "accelerator" not in _container(spec, step)["resources"], step
        assert set(k8s[f"exec-{TASK_OF_STEP[step]}"]) - {"fieldPathAsEnv"} == {"secretAsEnv", "securityContext"}, step


@pytest.mark.parametrize("launcher", ["trainjob", "none"])
def test_every_task_pod_runs_as_the_images_non_root_user(tmp_path, monkeypatch, launcher):
    # The policy on the compiled pipeline: the SDK sets the identity; the KFP backend adds no privilege
    # escalation, no capabilities and RuntimeDefault seccomp (kfp-kubernetes set_security_context).
    spec, k8s, text, cfg = _compile(tmp_path, monkeypatch, f"cluster.job.launcher={launcher}")
    assert set(k8s) == {f"exec-{task}" for task in TASK_OF_STEP.values()} | {"exec-split-params"}
    for executor, config in k8s.items():
        assert config["securityContext"] == {"runAsNonRoot": True, "runAsUser": str(IMAGE_USER),
                                             "runAsGroup": str(IMAGE_USER)}, executor
    for dockerfile in ("Dockerfile.pipeline", "Dockerfile.trainer"):  # the user the pods run as exists there
        lines = (REPO / "containers" / dockerfile).read_text().splitlines()
        assert f"USER {IMAGE_USER}:{IMAGE_USER}" in lines and any(f"--uid {IMAGE_USER}" in x for x in lines)


def test_compile_is_deterministic_and_the_image_appears_only_where_it_is_used(tmp_path, monkeypatch):
    cfg = _cfg()
    a = Path(compile_pipeline(cfg, tmp_path / "a.yaml")).read_text()
    assert Path(compile_pipeline(cfg, tmp_path / "b.yaml")).read_text() == a
    other = "registry.example.com/team/videossl-pipeline:9.9.9"
    b = Path(compile_pipeline(_cfg(f"cluster.image={other}"), tmp_path / "c.yaml")).read_text()
    changed = [line for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    # the six executors' images, the five steps' image input (part of their output folders' address)
    # and the params default (its header comment and its definition)
    assert len(changed) == 2 * (6 + 5 + 2), changed
    for line in changed:
        assert (IMAGE if line.startswith("-") else other) in line, line


def test_a_bad_toleration_names_its_key():
    """Caught when the params load (`videossl validate`, every step), not only when the pipeline compiles."""
    with pytest.raises(ConfigError, match=r"cluster\.job\.tolerations': entry \[0\].*'effekt'"):
        _cfg("cluster.job.launcher=none", "cluster.job.tolerations=[{key: a, effekt: NoSchedule}]")


def test_pretrain_component_refuses_params_for_another_launcher(tmp_path):
    from kfp import dsl

    from components.pretrain import pretrain  # the component's plain function, as its pod runs it
    from videossl.step_params import split

    with pytest.raises(ValueError, match=r"cluster\.job\.launcher is 'trainjob'.*compiled for 'none'"):
        pretrain(params=split(params_text(_cfg("cluster.job.launcher=trainjob")))["pretrain"],
                 data=dsl.Dataset(uri=str(tmp_path / "data"), metadata={"location": str(tmp_path / "data")}),
                 root=str(tmp_path), launcher="none", image=IMAGE, model=dsl.Model(uri=str(tmp_path / "model")))


# ----------------------------------------------------------------------------------------------
# submit


class FakeKFP:
    """The KFP v2beta1 REST calls kfp.Client makes to create a run, answered and recorded."""

    def __init__(self, multi_user: bool = False, fail_runs: bool = False):
        self.multi_user, self.fail_runs = multi_user, fail_runs
        self.run: dict | None = None
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append({"method": method, "path": url.path, "query": parse_qs(url.query), "body": body})
                route = (method, url.path)
                if route == ("GET", "/apis/v2beta1/healthz"):
                    self._reply(200, {"multi_user": fake.multi_user})
                elif route == ("GET", "/apis/v2beta1/experiments"):
                    self._reply(200, {})  # no experiment of that name yet
                elif route == ("POST", "/apis/v2beta1/experiments"):
                    self._reply(200, {**body, "experiment_id": "exp-0001"})
                elif route == ("POST", "/apis/v2beta1/runs") and fake.fail_runs:
                    self._reply(400, {"error": "invalid pipeline spec", "code": 3})
                elif route == ("POST", "/apis/v2beta1/runs"):
                    fake.run = {"run_id": "run-0001", "display_name": body["display_name"],
                                "experiment_id": body["experiment_id"], "state": "PENDING",
                                "created_at": "2026-01-01T00:00:00Z"}
                    self._reply(200, fake.run)
                elif method == "GET" and url.path == "/apis/v2beta1/runs/run-0001" and fake.run:
                    self._reply(200, fake.run)  # `kfp run create` shows the run it made
                else:
                    self._reply(404, {"error": f"no route {method} {url.path}"})

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]


@contextmanager
def fake_kfp(**kw):
    fake = FakeKFP(**kw)
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture()
def kfp_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    monkeypatch.delenv("KFP_HOST", raising=False)
    for var in ("KF_PIPELINES_DEFAULT_EXPERIMENT_NAME", "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME",
                "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)


def _submit_args(host: str, *extra: str) -> list[str]:
    args = ["pipeline", "submit", "--params", str(REPO / "params.yaml")]
    for o in CLUSTER + [f"cluster.kfp_host={host}", *extra]:
        args += ["-S", o]
    return args


VERSIONED = ("cluster.data_version=v1.0", "cluster.data_repo=https://git.example/videossl.git")


@pytest.mark.parametrize("multi_user", [False, True])
def test_submit_uploads_the_compiled_pipeline_with_params_as_arguments(tmp_path, kfp_env, capsys, multi_user):
    with fake_kfp(multi_user=multi_user) as kfp_api:
        code = main(_submit_args(kfp_api.url, *VERSIONED) + ["--out", str(tmp_path / "submitted.yaml")])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert result["run_id"] == "run-0001"
    assert result["url"] == f"{kfp_api.url}/#/runs/details/run-0001"

    cfg = _cfg(f"cluster.kfp_host={kfp_api.url}", *VERSIONED)
    [exp] = kfp_api.calls("POST", "/apis/v2beta1/experiments")
    assert exp["body"]["display_name"] == cfg.cluster.experiment
    assert (exp["body"].get("namespace") or None) == (cfg.cluster.namespace if multi_user else None)
    [run] = kfp_api.calls("POST", "/apis/v2beta1/runs")
    body = run["body"]
    assert body["experiment_id"] == "exp-0001"
    assert body["service_account"] == cfg.cluster.service_account
    assert body["display_name"] == result["run_name"]
    params = params_text(cfg)
    assert body["runtime_config"]["parameters"] == {"params": params, "root": cfg.cluster.root,
                                                    "data_version": "v1.0"}
    assert result["params_sha256"] == hashlib.sha256(params.encode()).hexdigest()
    # what was uploaded is exactly the compiled pipeline, platform (Kubernetes) part included
    spec, platform = yaml.safe_load_all((tmp_path / "submitted.yaml").read_text())
    assert body["pipeline_spec"] == {"pipeline_spec": spec, "platform_spec": platform}
    assert body["pipeline_spec"]["pipeline_spec"]["deploymentSpec"]["executors"]["exec-ingest"]["container"][
        "image"] == IMAGE
    assert [r["path"] for r in kfp_api.requests if r["method"] == "POST"] == ["/apis/v2beta1/experiments",
                                                                              "/apis/v2beta1/runs"]


def test_submit_dry_run_contacts_nothing_and_prints_the_payload(tmp_path, kfp_env, capsys):
    with fake_kfp() as kfp_api:
        code = main(_submit_args(kfp_api.url) + ["--dry-run", "--run-name", "try-1"])
    assert code == 0
    assert kfp_api.requests == []
    shown = json.loads(capsys.readouterr().out)
    cfg = _cfg(f"cluster.kfp_host={kfp_api.url}")
    assert shown["dry_run"] is True and shown["host"] == kfp_api.url and shown["run_name"] == "try-1"
    assert shown["experiment"] == cfg.cluster.experiment
    assert shown["service_account"] == cfg.cluster.service_account
    assert shown["arguments"]["root"] == cfg.cluster.root and shown["arguments"]["data_version"] == ""
    assert shown["params_sha256"] == hashlib.sha256(params_text(cfg).encode()).hexdigest()


def test_submit_refuses_params_that_lose_results_in_a_pod_naming_the_key(kfp_env, capsys):
    # the repository defaults: an MLflow sqlite file and a local artifact folder, fine on one machine
    code = main(["pipeline", "submit", "--params", str(REPO / "params.yaml"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert "tracking.uri is 'sqlite:///mlruns.db'" in err and "tracking.artifacts is 'mlartifacts'" in err


def test_submit_refuses_a_data_version_without_its_repository(kfp_env, capsys):
    assert main(_submit_args("https://kfp.example.com", "cluster.data_version=v1.0") + ["--dry-run"]) == 2
    assert "cluster.data_repo is not set" in capsys.readouterr().err


def test_submit_without_an_endpoint_names_the_key(kfp_env, capsys):
    code = main(_submit_args("null"))  # no cluster.kfp_host, no $KFP_HOST
    assert code == 2
    assert "cluster.kfp_host" in capsys.readouterr().err


def test_submit_reports_an_api_error(kfp_env, capsys):
    with fake_kfp(fail_runs=True) as kfp_api:
        code = main(_submit_args(kfp_api.url))
    assert code == 1
    err = capsys.readouterr().err
    assert f"submitting to the KFP API at {kfp_api.url} failed" in err and "invalid pipeline spec" in err


# ----------------------------------------------------------------------------------------------
# the cluster's data path, run locally


@pytest.mark.slow
def test_the_readme_kfp_run_create_command_submits_the_compiled_pipeline(tmp_path, kfp_env):
    """The README's cluster command, `kfp run create`, with the compiled YAML alone: the params are
    the pipeline's defaults, so only what changes (here the data version) is passed."""
    import subprocess
    import sys

    cfg = _cfg()
    package = compile_pipeline(cfg, tmp_path / "pipeline.yaml")
    kfp_cli = str(Path(sys.executable).with_name("kfp"))
    with fake_kfp() as kfp_api:
        proc = subprocess.run([kfp_cli, "--endpoint", kfp_api.url, "run", "create", "-e", cfg.cluster.experiment,
                               "-r", "first", "-f", package, "data_version=v1.0"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [run] = kfp_api.calls("POST", "/apis/v2beta1/runs")
    spec, platform = yaml.safe_load_all(Path(package).read_text())
    assert run["body"]["pipeline_spec"] == {"pipeline_spec": spec, "platform_spec": platform}
    assert run["body"]["runtime_config"]["parameters"] == {"data_version": "v1.0"}
    assert run["body"]["display_name"] == "first"
