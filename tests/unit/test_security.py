"""Loading a file never runs its code; unsafe keys never resolve outside the download folder; no
credential reaches a logged param; atomic outputs keep the umask's mode."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny import REPO
from videossl.data import sources
from videossl.models.checkpoint import FORMAT, CheckpointError, load_checkpoint, load_encoder
from videossl.train.checkpointing import rng_state, set_rng_state


class _Payload:
    """What a crafted checkpoint carries: unpickling it calls Path.touch(marker)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "encoder.pt"
    torch.save({"format": FORMAT, "shape": {}, "encoder": {}, "payload": _Payload(marker)}, bad)
    for load in (load_checkpoint, load_encoder):
        with pytest.raises(CheckpointError, match="unreadable or corrupt"):
            load(bad)
    assert not marker.exists()


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np
    path = tmp_path / "rng.pt"
    torch.save({"rng": [rng_state()]}, path)
    want = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(path, weights_only=True)["rng"], 0)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


@pytest.mark.parametrize("key", ["../escape.mp4", "a/../../escape.mp4", "/etc/escape.mp4", "a/./b.mp4",
                                 "a\\..\\b.mp4"])
def test_unsafe_keys_are_named_and_never_resolve_outside(tmp_path, key):
    assert sources.unsafe_key(key)
    with pytest.raises(ValueError, match="unsafe s3 key"):
        sources.cache_path(tmp_path / "cache", "bucket", key)


def test_a_plain_key_downloads_inside_the_cache(tmp_path):
    dest = sources.cache_path(tmp_path / "cache", "bucket", "clips/a b/one.mp4")
    assert dest.is_relative_to((tmp_path / "cache").resolve())


def test_credentials_in_uris_never_reach_logged_params():
    from videossl.tracking import flat_params, redact_uri
    params = flat_params({"tracking": {"uri": "https://alice:s3cret@mlflow.example:5000/x"},
                          "ingest": {"sources": ["s3://bucket/a", "postgresql://bob:pw@db/mlflow"]}})
    assert "s3cret" not in str(params) and "pw@" not in str(params)
    assert params["tracking.uri"] == "https://***@mlflow.example:5000/x"
    assert redact_uri("s3://bucket/key@v2") == "s3://bucket/key@v2"  # an '@' in a path is not user-info
    # a password with '@' or a raw '/', a token in the query: nothing of them is shown
    assert redact_uri("http://u:p@ss/w@rd@host:5000/api?token=abc&x=1") == "http://***@host:5000/api?token=***&x=1"
    assert redact_uri("https://h/x?X-Amz-Signature=zzz&a=1") == "https://h/x?X-Amz-Signature=***&a=1"
    assert redact_uri("http://host:5000/path@x") == "http://host:5000/path@x"  # a port, then an '@' in the path


@pytest.mark.parametrize("override, carrier", [
    ("tracking.uri=https://alice:s3cret@mlflow.example:5000", "MLFLOW_TRACKING_PASSWORD"),
    ("tracking.uri=https://alice:p@ss/s3cret@mlflow.example:5000", "MLFLOW_TRACKING_PASSWORD"),
    ("ingest.s3_endpoint_url=http://key:s3cret@minio:9000", "AWS_SECRET_ACCESS_KEY"),
    ('ingest.sources=["s3://bucket/raw?token=s3cret"]', "AWS_SECRET_ACCESS_KEY"),
    ("cluster.root=s3://bucket/runs?X-Amz-Signature=s3cret", "cluster.secrets.s3"),
    ("cluster.kfp_host=https://kfp.example/?access_token=s3cret", "KF_PIPELINES_SA_TOKEN_PATH"),
    ("cluster.data_repo=https://bob:s3cret@github.com/org/repo.git", "credential helper"),
])
def test_credentials_in_a_url_param_are_refused_before_anything_is_written(override, carrier):
    """Params reach the compiled pipeline, config.yaml, every checkpoint and the logs: a URL holding a
    secret is refused at validation, naming the key and where the secret goes, and the error shows none of it."""
    from videossl.config import ConfigError, load_config

    with pytest.raises(ConfigError) as e:
        load_config(str(REPO / "params.yaml"), [override])
    message = str(e.value)
    assert f"'{override.split('=', 1)[0]}'" in message and "holds credentials" in message and carrier in message
    assert "s3cret" not in message


def test_atomic_outputs_get_the_mode_the_umask_gives(tmp_path):
    import os
    import stat

    from videossl.storage import UMASK, write_text_atomic
    out = write_text_atomic(tmp_path / "metrics.json", "{}\n")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o666 & ~UMASK  # not mkstemp's 0600
