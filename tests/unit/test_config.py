"""params.yaml is validated before any work; a bad value names its key and what is allowed."""
import os
import subprocess
import sys

import pytest
import yaml

from tests.tiny import REPO
from videossl.config import Config, ConfigError, dump_config, load_config, parse_config


def test_repo_params_are_valid_and_complete():
    cfg = load_config(REPO / "params.yaml")
    # params.yaml spells out every knob: its keys are exactly the config tree's.
    assert set(yaml.safe_load((REPO / "params.yaml").read_text())) == set(Config.model_fields)
    assert parse_config(dump_config(cfg)) == cfg


def test_code_defaults_are_the_params_defaults():
    """A Config() built in a notebook trains exactly what `make run` trains: every default, at every
    depth, is params.yaml's value (the two drifted apart before, e.g. normalize_targets)."""
    def leaves(tree, prefix=""):
        for k, v in tree.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "objective" else [(prefix + k, v)]
    code = dict(leaves(Config().model_dump(mode="json")))
    params = dict(leaves(load_config(REPO / "params.yaml").model_dump(mode="json")))
    assert {k: (code[k], params[k]) for k in code if code[k] != params[k]} == {}


@pytest.mark.parametrize("override, key, hint", [
    ("ingest.fps=-3", "ingest.fps", "greater than 0"),
    ("ingest.fps=fast", "ingest.fps", "valid number"),
    ("ingest.bogus=1", "ingest.bogus", "allowed here"),
    ("pretrain.mask_ratio=1.0", "pretrain.mask_ratio", "less than 1"),
    ("ingest.decoder=ffmpeg", "ingest.decoder", "'auto', 'decord' or 'pyav'"),
    ("ingest.splits={train: 0.5, val: 0.5, test: 0.5}", "ingest.splits", "sum to 1"),
    ("ingest.synthetic.size=97", "ingest.synthetic.size", "multiple of 2"),
    ("ingest.size=60", "ingest.size", "divisible by model.patch"),
    ("ingest.clip_frames=7", "ingest.clip_frames", "divisible by model.tubelet"),
    ("model.heads=5", "model.dim", "divisible by model.heads"),
    ("register.gate_metrics=[colour.video]", "register.gate_metrics", "probe_eval.tasks"),
    ("probe_eval.tasks=[gravity_law, telepathy]", "probe_eval.tasks", "telepathy"),
    ("pretrain.lr=.inf", "pretrain.lr", "finite number"),
    ("ingest.splits={train: .nan, val: 0.5, test: 0.5}", "ingest.splits.train", "finite"),
    ("pretrain.steps=true", "pretrain.steps", "not true/false"),
    ("probe_eval.ceiling.lr=.nan", "probe_eval.ceiling.lr", "finite number"),
    ("ingest.s3_endpoint_url=minio:9000", "ingest.s3_endpoint_url", "http(s) URL"),
    ("ingest.s3_endpoint_url=http://minio:99999", "ingest.s3_endpoint_url", "port"),
    ("ingest.s3_endpoint_url='http://minio :9000'", "ingest.s3_endpoint_url", "whitespace"),
    ("ingest.pushgateway=localhost", "ingest.pushgateway", "host:port"),
    ("tracking.uri=mlruns.db", "tracking.uri", "store URI"),
    ("tracking.uri=http://", "tracking.uri", "http(s) URL with a host"),
    ("cluster.kfp_host=kfp.example.org", "cluster.kfp_host", "http(s) URL"),
    ("cluster.root=s3://My_Bucket/runs", "cluster.root", "bucket name"),
    ("cluster.data_remote=s3://x/dvc", "cluster.data_remote", "bucket name"),
    ("cluster.job.scratch=lots", "cluster.job.scratch", "pattern"),
])
def test_invalid_value_names_the_key(override, key, hint):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "params.yaml", [override])
    assert f"for '{key}'" in str(err.value) or f"key '{key}'" in str(err.value)
    assert hint in str(err.value)


def test_future_masking_needs_a_past_and_a_future():
    with pytest.raises(ConfigError, match=r"'pretrain.masking'.*two time slices") as err:
        load_config(REPO / "params.yaml", ["pretrain.masking=future", "model.tubelet=8"])
    assert "ingest.clip_frames (8)" in str(err.value)
    assert load_config(REPO / "params.yaml", ["pretrain.masking=future"]).pretrain.masking == "future"


def test_unknown_section_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'trainer'.*allowed here: .*pretrain"):
        parse_config("trainer: {steps: 3}")


def test_cli_exits_2_before_work_naming_the_key(tmp_path):
    out = tmp_path / "ingest"
    proc = subprocess.run([sys.executable, "-m", "videossl.cli", "ingest", "--params", str(REPO / "params.yaml"),
                           "-S", "ingest.clip_stride=0", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "ingest.clip_stride" in proc.stderr and "greater than or equal to 1" in proc.stderr
    assert not out.exists()  # nothing started


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")


def test_an_override_that_is_not_yaml_is_one_line_naming_it():
    with pytest.raises(ConfigError, match=r"override 'pretrain.lr=\[1': the value is not valid YAML") as err:
        load_config(REPO / "params.yaml", ["pretrain.lr=[1"])
    assert "\n" not in str(err.value)


def test_an_os_error_is_one_line_not_a_traceback(tmp_path):
    # an output folder under a file: the user's mistake, told in one line with the path (exit 1)
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "eval"
    proc = subprocess.run([sys.executable, "-m", "videossl.cli", "probe-eval", "--params", str(REPO / "params.yaml"),
                           "--data", str(tmp_path), "--models", str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert str(out) in lines[0] and "VIDEOSSL_DEBUG" in lines[0]
    debug = subprocess.run(proc.args, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "VIDEOSSL_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
