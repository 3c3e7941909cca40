"""Shared fixtures: loopback servers (tests/servers.py) and the tiny pipeline (tests/pipeline_fixtures.py).

`tests` is a package (tests/__init__.py), so helpers import as `tests.<module>`.
"""
import pytest
import torch

from tests.pipeline_fixtures import tiny_cfg, tiny_data, tiny_models, tiny_root  # noqa: F401
from tests.servers import prometheus, pushgateway, s3_server  # noqa: F401  (session fixtures for every test module)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one torch thread is several times faster than two (and than two fighting a busy
    CPU). A module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
