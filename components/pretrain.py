"""KFP component: the pretrain step (writes encoder.pt + frame_encoder.pt), here or as a cluster job."""
from typing import NamedTuple


def pretrain(params: str, data_uri: str, root: str, launcher: str) -> NamedTuple("Outputs", [("model_uri", str)]):
    """Self-supervised pretraining of the video encoder and its bag-of-frames baseline (`videossl.steps.pretrain`).

    Runs in this pod (launcher "none" on a cluster, "local" in kfp.local), or submits the multi-node
    job and waits for it ("trainjob" / "pytorchjob"). The launcher is fixed when the pipeline is
    compiled, because it also decides the pod's shape (GPUs here, or a light launcher pod).

    Args:
        params: The params every step validates.
        data_uri: The dataset's location (the ingest task's output).
        root: Where the run's data and outputs go (cluster.root).
        launcher: none, local, trainjob or pytorchjob (compiled in from cluster.job.launcher).

    Returns:
        model_uri: The checkpoints' location (encoder.pt, frame_encoder.pt, pretrain.json).
    """
    from collections import namedtuple

    from videossl.config import dump_config, parse_config
    from videossl.data.versioning import output_uri
    from videossl.steps.pretrain import pretrain as step
    from videossl.storage import staged

    cfg = parse_config(params)
    if launcher != "local" and cfg.cluster.job.launcher != launcher:
        raise ValueError(f"cluster.job.launcher is {cfg.cluster.job.launcher!r} in this run's params, but the "
                         f"pipeline was compiled for {launcher!r} (its pods are shaped for that): compile again "
                         f"with these params (`videossl pipeline submit` does)")
    out_uri = output_uri(root, "pretrain", dump_config(cfg), data_uri)
    if launcher in ("trainjob", "pytorchjob"):
        from videossl.cluster.launcher import launch_pretrain
        from videossl.models.checkpoint import CHECKPOINTS
        from videossl.storage import seal_dir

        model_uri = launch_pretrain(cfg, data_uri, out_uri)
        # the job's trainer writes each checkpoint atomically; the folder reads whole only from here
        seal_dir(model_uri, list(CHECKPOINTS.values()))
    else:
        with staged([data_uri], out_uri) as ([data], out):
            step(cfg, data, out)
        model_uri = out_uri
    return namedtuple("Outputs", ["model_uri"])(model_uri)
