"""KFP component: the pretrain step (writes encoder.pt + frame_encoder.pt), here or as a cluster job."""
from kfp.dsl import Dataset, Input, Model, Output


def pretrain(params: str, data: Input[Dataset], root: str, launcher: str, image: str, model: Output[Model]):
    """Self-supervised pretraining of the video encoder and its bag-of-frames baseline (`videossl.steps.pretrain`).

    Runs in this pod (launcher "none" on a cluster, "local" in kfp.local), or submits the multi-node
    job and waits for it ("trainjob" / "pytorchjob"). The launcher is fixed when the pipeline is
    compiled, because it also decides the pod's shape (GPUs here, or a light launcher pod).

    Args:
        params: The pretrain step's share of the params (the split-params task's output).
        data: The dataset (the ingest task's output).
        root: Where the run's data and outputs go (cluster.root).
        launcher: none, local, trainjob or pytorchjob (compiled in from cluster.job.launcher).
        image: The image the tasks run in (cluster.image, compiled in): part of the output's address.

    Returns:
        model: The checkpoints: points at their folder (encoder.pt, frame_encoder.pt, pretrain.json).
    """
    from videossl.artifact_locations import location, publish
    from videossl.data.versioning import output_uri
    from videossl.step_params import parse_step_params
    from videossl.steps.pretrain import pretrain as step
    from videossl.storage import staged

    cfg = parse_step_params(params, "pretrain")
    if launcher != "local" and cfg.cluster.job.launcher != launcher:
        raise ValueError(f"cluster.job.launcher is {cfg.cluster.job.launcher!r} in this run's params, but the "
                         f"pipeline was compiled for {launcher!r} (its pods are shaped for that): compile again "
                         f"with these params (`videossl pipeline submit` does)")
    data_uri = location(data)
    out_uri = output_uri(root, "pretrain", params, image, data_uri)
    if launcher in ("trainjob", "pytorchjob"):
        from videossl.cluster.launcher import launch_pretrain
        from videossl.models.checkpoint import CHECKPOINTS
        from videossl.storage import seal_dir

        model_uri = launch_pretrain(cfg, data_uri, out_uri)
        # the job's trainer writes each checkpoint atomically; the folder reads whole only from here
        seal_dir(model_uri, list(CHECKPOINTS.values()))
    else:
        with staged([data_uri], out_uri) as ([data_dir], out):
            step(cfg, data_dir, out)
        model_uri = out_uri
    publish(model, model_uri, objective=cfg.pretrain.objective)
