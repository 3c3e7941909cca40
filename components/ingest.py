"""KFP component: the ingest step (raw videos -> clip shards + manifest at `out_uri`)."""
from typing import NamedTuple

from kfp import dsl

from components import DEFAULT_IMAGE


# Only the function's source travels into the component: every import lives inside the body.
@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def ingest(params: str, out_uri: str) -> NamedTuple("Outputs", [("data_uri", str)]):
    """Run `videossl.steps.ingest.ingest`; returns the dataset location."""
    from collections import namedtuple

    from videossl.config import parse_config
    from videossl.steps.ingest import ingest as step

    step(parse_config(params), out_uri)
    return namedtuple("Outputs", ["data_uri"])(out_uri)
