"""Training hygiene in the real loop: the loss is read on the host only at log steps, and the gradient
norm and held-out numbers reach MLflow."""
from __future__ import annotations

from tests.tiny import tiny_config
from videossl.train import distributed, loop


def test_the_loss_is_read_on_the_host_only_at_log_and_checkpoint_steps(tmp_path, tiny_data, monkeypatch):
    steps, log_every = 8, 4
    cfg = tiny_config(tmp_path, f"pretrain.steps={steps}", f"pretrain.log_every={log_every}", "pretrain.checkpoint_every=0",
                      "pretrain.metrics_port=null", f"tracking.uri=sqlite:///{tmp_path}/mlruns.db")
    reads = []
    total = distributed.total
    monkeypatch.setattr(distributed, "total", lambda value: reads.append(1) or total(value))
    result = loop.train(cfg, tiny_data, str(tmp_path / "encoder.pt"), "video", str(tmp_path / "ckpt"))
    # per log step: the skipped-step count and the window's loss; nothing else crosses to the host
    assert len(reads) == 2 * (steps // log_every) and result["steps"] == steps


def test_grad_norm_and_held_out_numbers_reach_mlflow(tmp_path, tiny_data):
    import mlflow

    cfg = tiny_config(tmp_path, "pretrain.objective=pretext", "pretrain.steps=4", "pretrain.log_every=2",
                      "pretrain.eval_every=2", "pretrain.metrics_port=null", f"tracking.uri=sqlite:///{tmp_path}/mlruns.db",
                      f"tracking.artifacts={tmp_path}/mlartifacts")
    loop.train(cfg, tiny_data, str(tmp_path / "encoder.pt"), "video", str(tmp_path / "ckpt"))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    logged = set(run.data.metrics)
    assert {"objective/grad_norm", "objective/arrow_acc", "objective/heldout_arrow_acc",
            "objective/heldout_speed_acc", "objective/heldout_loss"} <= logged
    assert run.data.metrics["objective/grad_norm"] > 0
