"""KFP component: the ingest step (raw videos -> clip shards + manifest), or a DVC data version."""
from typing import NamedTuple


def ingest(params: str, root: str, data_version: str) -> NamedTuple("Outputs", [("data_uri", str)]):
    """Run `videossl.steps.ingest.ingest`, or, when `data_version` (a git revision) is set, resolve
    the DVC-versioned ingest output of that revision instead of ingesting; returns the dataset's
    location."""
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
