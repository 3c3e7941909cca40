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


def plan_partitions(params: str, count: int) -> list:
    """The partitions of a partitioned ingest, one item per partition for the ParallelFor.

    Args:
        params: The ingest step's share of the params.
        count: How many partitions the source list is split into (cluster.ingest_partitions).

    Returns:
        One {"params", "index", "count"} per partition. (Each partition's inputs travel in its item:
        kfp.local replaces a loop body's task-output inputs with the loop item, so nothing else may.)
    """
    return [{"params": params, "index": i, "count": count} for i in range(count)]


def ingest_partition(partition: dict, root: str, image: str) -> str:
    """One partition of the ingest (`videossl.steps.ingest.ingest_partition`): chunks index, index +
    count, ... of the source list, published whole as its own folder.

    Args:
        partition: {"params": the ingest step's share, "index": this partition's number, "count": how many}.
        root: Where the run's data and outputs go (cluster.root).
        image: The image the tasks run in (part of the output's address).

    Returns:
        The partition's folder (under root), for the merge.
    """
    import tempfile

    from videossl.data.versioning import output_uri
    from videossl.step_params import parse_step_params
    from videossl.steps.ingest import ingest_partition as step
    from videossl.steps.ingest import partition_name
    from videossl.storage import staged

    params, index, count = partition["params"], int(partition["index"]), int(partition["count"])
    cfg = parse_step_params(params, "ingest")
    parts_uri = output_uri(root, "ingest", params, image, f"partitions={count}")
    part_uri = f"{parts_uri}/{partition_name(index, count)}"
    with tempfile.TemporaryDirectory(prefix="videossl-parts-") as parts, staged([], part_uri) as (_, out):
        step(cfg, parts, index, count, into=out)  # the sources' work folder: the pod's own, never published
    return part_uri


def ingest_merge(params: str, root: str, image: str, parts: list, data: Output[Dataset]):
    """The partitions, merged into the dataset one ingest writes (`videossl.steps.ingest.merge_published`:
    the same folder address, the same digest; from S3 no shard moves).

    Args:
        params: The ingest step's share of the params.
        root: Where the run's data and outputs go (cluster.root).
        image: The image the tasks run in (part of the output's address).
        parts: The partitions' folders (the ingest_partition tasks' outputs, collected).

    Returns:
        data: The dataset, as the one-task ingest returns it.
    """
    from videossl.artifact_locations import publish
    from videossl.data.versioning import output_uri
    from videossl.step_params import parse_step_params
    from videossl.steps.ingest import merge_published

    cfg = parse_step_params(params, "ingest")
    out_uri = output_uri(root, "ingest", params, image, "")  # the one-task ingest's address: the same dataset
    stats = merge_published(cfg, list(parts), out_uri)
    publish(data, out_uri, digest=str(stats.get("digest", "")), videos=stats.get("videos"), clips=stats.get("clips"))
