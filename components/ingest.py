"""KFP component: the ingest step (raw videos -> clip shards + manifest), or a DVC data version."""
from typing import NamedTuple


def ingest(params: str, root: str, data_version: str) -> NamedTuple("Outputs", [("data_uri", str)]):
    """Raw videos to clip shards (`videossl.steps.ingest.ingest`), or a DVC data version of them.

    Args:
        params: The params every step validates (params.yaml as YAML or one line of JSON).
        root: Where the run's data and outputs go (cluster.root); the output is a params-addressed folder under it.
        data_version: A git revision of the DVC-tracked ingest output to use instead of ingesting; "" = ingest.

    Returns:
        data_uri: The dataset's location (shards, manifest, ingest.json).
    """
    from collections import namedtuple

    from videossl.config import dump_config, parse_config
    from videossl.data.versioning import output_uri, resolve_data
    from videossl.steps.ingest import ingest as step
    from videossl.storage import staged

    cfg = parse_config(params)
    out_uri = output_uri(root, "ingest", dump_config(cfg), data_version)
    if data_version:
        resolve_data(data_version, cfg.cluster.data_repo, cfg.cluster.data_remote, out_uri)
    else:
        with staged([], out_uri) as (_, out):
            step(cfg, out)
    return namedtuple("Outputs", ["data_uri"])(out_uri)
