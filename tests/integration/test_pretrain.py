"""Pretraining through real torchrun: one process and two, checkpoints, rank-0-only tracking."""
import json

import pytest
import torch
from mlflow import MlflowClient

from tests.tiny import tiny_config
from videossl.data.shards import ClipStore
from videossl.models.checkpoint import load_checkpoint, load_encoder
from videossl.steps.pretrain import PretrainError, pretrain
from videossl.objectives.base import Recipe
from videossl.train.data import ClipDataset, GlobalBatchSampler, Item


def _runs(cfg, variant):
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("variant") == variant]


def test_pretrain_one_process_writes_self_describing_checkpoints(tiny_cfg, tiny_models, tiny_data):
    summary = json.loads((tiny_models / "pretrain.json").read_text())
    assert set(summary["checkpoints"]) == {"video", "frames"}
    video, meta = load_encoder(tiny_models / "encoder.pt")
    frames, fmeta = load_encoder(tiny_models / "frame_encoder.pt")
    store = ClipStore(tiny_data)
    assert meta["num_frames"] == store.clip_frames and fmeta["num_frames"] == 1
    assert meta["dataset_digest"] == json.loads((tiny_data / "ingest.json").read_text())["digest"]
    state = load_checkpoint(tiny_models / "encoder.pt")
    assert state["step"] == tiny_cfg.pretrain.steps
    # the exported model is the weights and what they mean (the encoder, the objective's own heads and
    # projection without the shared encoder again); how the run went stays out of it
    assert set(state) == {"format", "variant", "shape", "config", "dataset_digest", "step", "loss", "encoder",
                          "objective", "result"}
    assert state["objective"] and not any(".encoder." in k or k.startswith("encoder.") for k in state["objective"])
    assert state["config"]["model"]["dim"] == tiny_cfg.model.dim and "log_every" not in state["config"]["pretrain"]
    assert "seconds" not in state["result"] and set(state["config"]) == {"seed", "model", "pretrain", "ingest"}
    timings = json.loads((tiny_models / "timings.json").read_text())
    assert timings["video"]["seconds"] > 0 and "seconds" not in summary["video"]
    assert not list(tiny_models.glob("*.timings.json"))  # merged into timings.json
    for variant in ("video", "frames"):
        (run,) = _runs(tiny_cfg, variant)
        assert run.data.params["variant"] == variant
        assert "loss" in run.data.metrics and run.info.status == "FINISHED"
    # a model-training experiment: MLflow 3's UI opens it on the runs table, not the GenAI overview
    exp = MlflowClient(tracking_uri=tiny_cfg.tracking.uri).get_experiment_by_name(tiny_cfg.tracking.experiment)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


def test_pretrain_two_processes_torchrun_logs_from_rank_zero_only(tmp_path, tiny_data):
    cfg = tiny_config(tmp_path, "pretrain.nproc=2", "pretrain.steps=2", "pretrain.baseline_steps=2")
    summary = pretrain(cfg, tiny_data, tmp_path / "pretrain")
    assert summary["video"]["world_size"] == 2 and summary["frames"]["world_size"] == 2
    assert load_checkpoint(tmp_path / "pretrain" / "encoder.pt")["step"] == 2
    assert len(_runs(cfg, "video")) == 1 and len(_runs(cfg, "frames")) == 1  # not one per rank


def test_ranks_split_one_global_batch():
    one = list(GlobalBatchSampler(50, 8, 0, 1, seed=3, start_step=0, steps=4))
    two = [list(GlobalBatchSampler(50, 8, r, 2, seed=3, start_step=0, steps=4)) for r in range(2)]
    for step in range(4):
        merged = sorted(two[0][step] + two[1][step], key=lambda it: it.position)
        assert [it.index for it in merged] == [it.index for it in one[step]]
    resumed = list(GlobalBatchSampler(50, 8, 0, 1, seed=3, start_step=2, steps=4))
    assert [[i.index for i in b] for b in resumed] == [[i.index for i in b] for b in one[2:]]
    with pytest.raises(ValueError, match="divisible by the world size"):
        GlobalBatchSampler(50, 7, 0, 2, 0, 0, 1)


def test_a_shard_window_draws_a_few_shards_at_a_time_and_resumes_alike():
    """pretrain.shard_window: each epoch takes the shards in a random order, N at a time; still a
    permutation of every example, the same for every rank and for a resumed run. 0 is today's order."""
    import numpy as np

    groups = np.repeat(np.arange(6), 8)  # 6 shards of 8 examples
    plain = GlobalBatchSampler(48, 8, 0, 1, seed=3, start_step=0, steps=6)
    assert np.array_equal(plain._order(0), np.random.default_rng([3, 0]).permutation(48))
    windowed = GlobalBatchSampler(48, 8, 0, 1, seed=3, start_step=0, steps=12, groups=groups, window=2)
    for epoch in (0, 1):
        order = windowed._order(epoch)
        assert sorted(order) == list(range(48))
        windows = [set(groups[order[i:i + 16]]) for i in range(0, 48, 16)]
        assert all(len(w) == 2 for w in windows) and set().union(*windows) == set(range(6))
    assert not np.array_equal(windowed._order(0), windowed._order(1))
    batches = [[i.index for i in b] for b in windowed]
    resumed = GlobalBatchSampler(48, 8, 0, 1, seed=3, start_step=7, steps=12, groups=groups, window=2)
    assert [[i.index for i in b] for b in resumed] == batches[7:]
    ranks = [list(GlobalBatchSampler(48, 8, r, 2, 3, 0, 12, groups, 2)) for r in range(2)]
    for step in range(12):
        assert sorted(i.index for i in ranks[0][step] + ranks[1][step]) == sorted(batches[step])


def test_frame_dataset_covers_every_training_frame_once(tiny_data):
    store = ClipStore(tiny_data)
    ds = ClipDataset(store, "frames", Recipe(1), seed=0)
    assert len(ds) == sum(v.frames for v in store.videos_in("train", kind="pool"))
    example, _ = ds[Item(step=0, position=0, index=5)]
    assert example["clip"].shape == (1, store.size, store.size, 3)


def test_pretraining_never_sees_the_benchmark_world(tiny_data):
    store = ClipStore(tiny_data)
    for variant, recipe in (("frames", Recipe(1)), ("video", Recipe(store.clip_frames))):
        ds = ClipDataset(store, variant, recipe, seed=0)
        assert {v.kind for v in ds.videos} == {"pool"} and {v.split for v in ds.videos} == {"train"}
    assert store.videos_in(kind="benchmark")  # it is there, for probe-eval only


def test_diverging_loss_stops_with_a_clear_error_and_no_checkpoint(tmp_path, tiny_data):
    cfg = tiny_config(tmp_path, "pretrain.lr=1.0e+12", "pretrain.warmup_steps=0", "pretrain.steps=6")
    with pytest.raises(PretrainError, match="pretraining failed .*finished: none"):
        pretrain(cfg, tiny_data, tmp_path / "pretrain")
    assert not (tmp_path / "pretrain" / "encoder.pt").exists()


def test_checkpoint_weights_are_finite(tiny_models):
    state = load_checkpoint(tiny_models / "encoder.pt")
    assert all(torch.isfinite(v).all() for v in state["encoder"].values())


def _trainers_of(out) -> list[int]:
    """PIDs of live processes whose command line names `out` (torchrun and its workers)."""
    import os
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if str(out) in cmd and "videossl.train.main" in cmd and not zombie and int(pid) != os.getpid():
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_killing_the_step_takes_the_trainer_down_and_a_second_run_is_refused(how, tmp_path, tiny_data):
    import signal
    import subprocess
    import sys
    import time

    from tests.tiny import REPO, tiny_params_yaml
    params = tmp_path / "params.yaml"
    params.write_text(tiny_params_yaml(tmp_path, "pretrain.steps=1000000", "pretrain.log_every=1",
                                       "pretrain.threads=1", "pretrain.metrics_port=null"))
    out = tmp_path / "pretrain"
    log = tmp_path / "step.log"
    with open(log, "wb") as f:
        step = subprocess.Popen([sys.executable, "-m", "videossl.cli", "pretrain", "--params", str(params),
                                 "--data", str(tiny_data), "--out", str(out)], stdout=f, stderr=subprocess.STDOUT,
                                cwd=REPO)
    try:
        deadline = time.monotonic() + 300  # a bound for a hung test; the event is the first logged step
        while "step 1/" not in log.read_text(errors="replace"):
            assert step.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        assert _trainers_of(out), "the trainer should be running"
        with pytest.raises(PretrainError, match="another run is writing to"):  # the folder is taken
            pretrain(tiny_config(tmp_path), tiny_data, out)
        step.send_signal(getattr(signal, how))
        step.wait(timeout=300)
        while _trainers_of(out):  # the kernel (SIGKILL) or the step (SIGTERM) ends them: wait for it
            assert time.monotonic() < deadline, f"trainer outlived the step: {_trainers_of(out)}"
            time.sleep(0.2)
    finally:
        if step.poll() is None:
            step.kill()
