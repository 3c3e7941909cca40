"""Session fixtures: one tiny dataset and one tiny pair of pretrained encoders, made by the real steps."""
from __future__ import annotations

import pytest

from tests.tiny import tiny_config
from videossl.steps.ingest import ingest
from videossl.steps.pretrain import pretrain


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-pipeline")


@pytest.fixture(scope="session")
def tiny_cfg(tiny_root):
    return tiny_config(tiny_root)


@pytest.fixture(scope="session")
def tiny_data(tiny_root, tiny_cfg):
    out = tiny_root / "data"
    ingest(tiny_cfg, out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_root, tiny_cfg, tiny_data):
    out = tiny_root / "pretrain"
    pretrain(tiny_cfg, tiny_data, out)
    return out
