"""KFP component: the ingest step (raw videos -> clip shards + manifest), or a DVC data version."""
from kfp.dsl import Dataset, Output


def ingest(params: str, root: str, data_version: str, image: str, data: Output[Dataset]):
    """Raw videos to clip shards (`videossl.steps.ingest.ingest`), or a DVC data version of them.

    Args:
        params: The ingest step's share of the params (the split-params task's output).
        root: Where the run's data and outputs go (cluster.root); the output is a params-addressed folder under it.
        data_version: A git revision of the DVC-tracked ingest output to use instead of ingesting; "" = ingest.
        image: The image the tasks run in (cluster.image, compiled in): part of the output's address, so
            new code never writes into an older version's folder.

    Returns:
        data: The dataset: points at its folder (shards, manifest, ingest.json); metadata has its digest.
    """
    from videossl.artifact_locations import publish
    from videossl.data.versioning import output_uri, resolve_data
    from videossl.step_params import parse_step_params
    from videossl.steps.ingest import ingest as step
    from videossl.storage import staged

    cfg = parse_step_params(params, "ingest")
    out_uri = output_uri(root, "ingest", params, image, data_version)
    if data_version:
        resolve_data(data_version, cfg.cluster.data_repo, cfg.cluster.data_remote, out_uri)
        publish(data, out_uri, data_version=data_version)
    else:
        with staged([], out_uri) as (_, out):
            stats = step(cfg, out)
        publish(data, out_uri, digest=str(stats.get("digest", "")), videos=stats.get("videos"),
                clips=stats.get("clips"))
