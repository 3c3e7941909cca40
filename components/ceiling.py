"""KFP component: the ceiling step (the held-out tasks' supervised ceiling), beside pretraining."""
from typing import NamedTuple

from kfp.dsl import Dataset, Input


def ceiling(params: str, data: Input[Dataset], root: str, image: str) -> NamedTuple("Outputs", [("ceiling_uri", str)]):
    """A small video network trained with each held-out task's labels (`videossl.steps.ceiling`): what the
    benchmark's clips allow, once per dataset; it needs no model, so it runs while pretraining does.

    Args:
        params: The ceiling step's share of the params (the split-params task's output).
        data: The dataset (the ingest task's output).
        root: Where the run's data and outputs go (cluster.root).
        image: The image the tasks run in (cluster.image, compiled in): part of the output's address.

    Returns:
        ceiling_uri: The ceiling's location (ceiling.json, metrics.json).
    """
    from collections import namedtuple

    from videossl.artifact_locations import location
    from videossl.data.versioning import output_uri
    from videossl.step_params import parse_step_params
    from videossl.steps.ceiling import ceiling as step
    from videossl.storage import staged

    cfg = parse_step_params(params, "ceiling")
    data_uri = location(data)
    out_uri = output_uri(root, "ceiling", params, image, data_uri)
    with staged([data_uri], out_uri) as ([data_dir], out):
        step(cfg, data_dir, out)
    return namedtuple("Outputs", ["ceiling_uri"])(out_uri)
