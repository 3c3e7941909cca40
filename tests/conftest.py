"""Shared fixtures: loopback servers (tests/servers.py) and the tiny pipeline (tests/pipeline_fixtures.py).

`tests` is a package (tests/__init__.py), so helpers import as `tests.<module>`.
"""
from tests.pipeline_fixtures import tiny_cfg, tiny_data, tiny_models, tiny_root  # noqa: F401
from tests.servers import prometheus, pushgateway, s3_server  # noqa: F401  (session fixtures for every test module)
