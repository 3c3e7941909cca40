"""Multi-node pretraining on Kubernetes: the job the pretrain step submits on a cluster.

- `jobs.render_job(cfg, data_uri, out_uri) -> dict`: the TrainJob / PyTorchJob manifest, from the
  YAML templates in templates/ (shown under k8s/jobs/) and params.yaml's `cluster` section.
- `launcher.launch_pretrain(cfg, data_uri, out_uri, *, api_client=None) -> str`: submit (or adopt)
  the job, wait for it, return `out_uri` where it wrote encoder.pt and frame_encoder.pt.
- `worker`: what each trainer process in the job's pods runs under torchrun.

Nothing is imported here, so the trainer pods' `-m videossl.cluster.worker` does not load the
Kubernetes client.
"""
