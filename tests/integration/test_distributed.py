"""Distributed correctness through real torchrun (gloo on CPU): world-size-independent training,
two nodes over a c10d rendezvous, and a SIGKILLed run that resumes to the very same weights.

One uninterrupted 2-process run (module fixture) is the reference of all three tests, so the
module pays for few torchrun launches (each costs ~10-20 s of imports on 2 cores).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import torch

from tests.servers import free_port
from tests.tiny import tiny_config, tracking_overrides
from videossl import objectives
from videossl.config import ConfigError, dump_config
from videossl.data.shards import ClipStore
from videossl.models.checkpoint import encoder_shape, load_checkpoint
from videossl.models.vit import VideoViT
from videossl.steps.pretrain import PretrainError, pretrain
from videossl.train.data import ClipDataset, Collator, Item
from videossl.models.checkpoint import state_digest
from videossl.train.loop import forward_backward, train

STEPS = 24      # long enough that a kill after the first checkpoint lands mid-run
BATCH = 4       # the tiny global batch: 2 processes x 2 clips, or 1 process x 4 (or 2 x 2 micro-batches)
TIMEOUT_S = 180  # per launch; a launch takes ~15-30 s on 2 busy cores


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """In-process training is one rank, whatever the environment the tests run in."""
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def params(tiny_root):
    """Tiny params for STEPS steps; MLflow runs go to the session's store (a new sqlite store costs
    ~5 s to create) under an experiment of their own. fp32: the bounds below are about float32
    summation order; under bf16 autocast (a CPU with AMX) each split of the batch rounds its
    activations differently, which is the autocast's noise, not the accumulation's. MAE: a loss that
    is a mean over clips. InfoNCE is not (its negatives are the clips of one pass, by design), so a
    contrastive objective's result does depend on how the batch is split."""
    def make(root: Path, *extra: str):
        return tiny_config(root, "pretrain.objective=mae", "pretrain.precision=fp32", f"pretrain.steps={STEPS}", f"pretrain.batch_size={BATCH}",
                           "pretrain.checkpoint_every=2", "pretrain.keep_last=2", "pretrain.log_every=8",
                           "pretrain.threads=1", *tracking_overrides(tiny_root), "tracking.experiment=tests-distributed",
                           *extra)
    return make


@dataclass
class Launch:
    proc: subprocess.Popen
    log: Path

    def wait(self, timeout: float = TIMEOUT_S) -> list[dict]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc)
            pytest.fail(f"torchrun did not finish in {timeout} s:\n{self.log.read_text()[-4000:]}")
        out = self.log.read_text()
        assert self.proc.returncode == 0, f"torchrun exited {self.proc.returncode}:\n{out[-4000:]}"
        return [json.loads(line) for line in out.splitlines() if line.startswith('{"variant"')]


def torchrun(root: Path, cfg, data: Path, out: Path, launcher: list[str], name: str) -> Launch:
    config = root / "params.yaml"
    config.write_text(dump_config(cfg))
    log = root / f"{name}.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "videossl.train.main",
           "--config", str(config), "--data", str(data), "--out", str(out), "--variants", "video"]
    with open(log, "wb") as f:  # its own session: the test can kill torchrun and its workers together
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    return Launch(proc, log)


STANDALONE = ["--standalone", "--nproc-per-node=2"]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (torchrun starts each worker in a session of its own, so
    killing torchrun's process group alone would leave them running)."""
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    for p in [proc.pid, *(w.pid for w in workers)]:
        try:
            os.killpg(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(30)


@pytest.fixture
def launches():
    started: list[Launch] = []
    yield started
    for launch in started:  # always: a failed test must not leave trainers running
        if launch.proc.poll() is None:
            kill_tree(launch.proc)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_data, params):
    """2 processes x batch B/2, STEPS steps, never interrupted: the reference weights."""
    root = tmp_path_factory.mktemp("uninterrupted")
    launch = torchrun(root, params(root), tiny_data, root / "out", STANDALONE, "run")
    try:
        results = launch.wait()
    finally:
        if launch.proc.poll() is None:
            kill_tree(launch.proc)
    return {"results": results, "objective": final_objective(root / "out" / "checkpoints"), "root": root}


def final_objective(checkpoints: Path) -> dict:
    """The whole objective's weights at the last step (its final training checkpoint: the exported
    encoder.pt holds the encoder only)."""
    (last,) = sorted(checkpoints.glob("video-*/step_*.pt"))[-1:]
    return load_checkpoint(last)["objective"]


def initial_state(cfg, data: Path) -> dict:
    """The weights every run starts from (the seed's)."""
    store = ClipStore(data)
    torch.manual_seed(cfg.seed)
    shape = encoder_shape(cfg.model, "video", store.clip_frames, store.size)
    return objectives.build(cfg, VideoViT(shape), "video")[0].state_dict()


def relative_diff(a: dict, b: dict, start: dict) -> tuple[float, float]:
    """(||a - b|| / ||b - start||, max |a - b|): the difference relative to how far training moved
    the weights, and the largest single difference."""
    diff = torch.cat([(a[k].float() - b[k].float()).flatten() for k in b])
    moved = torch.cat([(b[k].float() - start[k].float()).flatten() for k in b])
    return (diff.norm() / moved.norm()).item(), diff.abs().max().item()


def test_two_processes_reach_the_weights_of_one_process_with_the_whole_batch(uninterrupted, tiny_data, tmp_path,
                                                                             params):
    """2 processes x B/2 (torchrun) == 1 process x B == 1 process x 2 micro-batches of B/2, after 24 steps.

    Not bit-exact: the same float32 gradients are summed in another order (per rank then all-reduced,
    or per micro-batch then accumulated), and AdamW divides by sqrt(v), which turns a rounding
    difference in a near-zero gradient into a visible one in that weight's update. So the max
    |difference| is a poor yardstick (observed 3.8e-5 at a weight scale of 1.0, 2e-3 of the largest
    weight movement); the norm of the difference relative to how far training moved the weights is a
    good one. Observed: 3.7e-5 (2 processes vs 1), 3.4e-5 (micro-batches vs whole). Real differences
    are 1,000x larger: one step fewer 0.034, lr 7% higher 0.06, each rank on its own half-batch 0.18.
    The bound, 1e-3, sits ~30x above the noise and ~30x below those. (AdamW is blind to a constant
    gradient scale, so the accumulation's loss scaling is checked on gradients, in the next test.)
    """
    results = uninterrupted["results"]
    assert [r["world_size"] for r in results] == [2, 2]
    assert all(r["steps"] == STEPS and r["resumed_from"] == 0 for r in results)

    one = {}
    for name, extra in {"whole": [], "micro": ["pretrain.micro_batch=2"]}.items():
        cfg = params(tmp_path / name, *extra)
        train(cfg, tiny_data, str(tmp_path / name / "encoder.pt"), "video", str(tmp_path / name / "checkpoints"))
        one[name] = final_objective(tmp_path / name / "checkpoints")

    start = initial_state(params(tmp_path), tiny_data)
    two_vs_one, max_two = relative_diff(uninterrupted["objective"], one["whole"], start)
    micro_vs_whole, max_micro = relative_diff(one["micro"], one["whole"], start)
    print(f"relative diff: 2 procs vs 1 {two_vs_one:.2g} (max {max_two:.2g}); "
          f"micro vs whole {micro_vs_whole:.2g} (max {max_micro:.2g})")
    assert two_vs_one < 1e-3 and micro_vs_whole < 1e-3


def test_accumulated_gradient_is_the_gradient_of_the_global_mean_loss(tiny_data, tmp_path, params):
    """One step's gradient over 4 clips: in one pass, 2 x 2 and 4 x 1 micro-batches. Equal up to float32
    summation order (observed ~1e-7 relative); a wrong loss scale would be off by a factor 2 or 4."""
    cfg = params(tmp_path)
    store = ClipStore(tiny_data)
    torch.manual_seed(cfg.seed)
    model, recipe = objectives.build(cfg, VideoViT(encoder_shape(cfg.model, "video", store.clip_frames, store.size)))
    dataset = ClipDataset(store, "video", recipe, cfg.seed)
    batch = Collator(recipe, cfg.seed)([dataset[Item(0, p, p * 7)] for p in range(BATCH)])
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    grads, losses = {}, {}
    for micro in (4, 2, 1):
        model.zero_grad(set_to_none=True)
        losses[micro], _ = forward_backward(model, model, batch, micro, nullcontext(), scaler, torch.device("cpu"))
        grads[micro] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for micro in (2, 1):
        rel = ((grads[micro] - grads[4]).norm() / grads[4].norm()).item()
        assert rel < 1e-5, f"micro_batch={micro}: gradient differs by {rel:.2g} (relative)"
        assert torch.allclose(losses[micro], losses[4], rtol=1e-6)


def test_compile_and_activation_checkpointing_train_like_the_plain_model(params, tiny_data, tmp_path, monkeypatch):
    """The GPU-path knobs run on the CPU. torch.compile goes through dynamo with its eager backend:
    real inductor code generation for this tiny model took ~110 s for one CPU run here, too slow
    for the suite; the graph capture, which is what breaks on unsupported code, is exercised."""
    compiled = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    weights = {}
    for name, extra in {"plain": [], "fast": ["pretrain.compile=true", "pretrain.activation_checkpointing=true"]}.items():
        cfg = params(tmp_path / name, "pretrain.steps=2", *extra)
        train(cfg, tiny_data, str(tmp_path / name / "encoder.pt"), "video", str(tmp_path / name / "checkpoints"))
        weights[name] = final_objective(tmp_path / name / "checkpoints")
    assert len(compiled) == 1
    assert weights["fast"].keys() == weights["plain"].keys()  # the blocks' state_dict keys are unchanged
    assert all(torch.allclose(weights["fast"][k], v, atol=1e-6) for k, v in weights["plain"].items())


def test_more_processes_than_shards_fails_before_training_naming_the_key(tiny_data, tmp_path):
    shards = len({v.shard for v in ClipStore(tiny_data).pretraining_videos()})
    cfg = tiny_config(tmp_path, f"pretrain.nproc={shards + 1}", f"pretrain.batch_size={2 * (shards + 1)}")
    with pytest.raises(PretrainError, match=rf"pretrain.nproc: {shards + 1} processes .* only {shards} shard"):
        pretrain(cfg, tiny_data, tmp_path / "pretrain")
    assert not (tmp_path / "pretrain").exists()  # nothing started


@pytest.mark.parametrize("overrides, key", [
    (["pretrain.nproc=3", "pretrain.batch_size=4"], "pretrain.batch_size"),
    (["pretrain.nproc=2", "pretrain.batch_size=8", "pretrain.micro_batch=3"], "pretrain.micro_batch"),
    (["pretrain.batch_size=4", "pretrain.micro_batch=8"], "pretrain.micro_batch"),
])
def test_batch_that_does_not_split_evenly_fails_naming_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=rf"invalid value for '{key}'"):
        tiny_config(tmp_path, *overrides)


def test_two_nodes_over_c10d_rendezvous_end_with_identical_weights(uninterrupted, tiny_data, tmp_path, launches,
                                                                   params):
    """Two torchrun launchers on 127.0.0.1 (2 nodes x 1 process, c10d rendezvous) train, and every
    rank reports the sha256 of its own final weights: equal on both nodes, equal to the exported
    checkpoint, and bit-equal to the 2-process single-node run (same world size, same reduction)."""
    port, run_id = free_port(), f"test-{uuid.uuid4().hex[:8]}"
    node = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id={run_id}", "--rdzv-conf=join_timeout=120", "--max-restarts=0"]
    cfg = params(tmp_path)
    for name in ("node-a", "node-b"):
        launches.append(torchrun(tmp_path, cfg, tiny_data, tmp_path / "out", node, name))
    (a,), (b,) = launches[0].wait(), launches[1].wait()
    assert a["world_size"] == b["world_size"] == 2
    digests = a["weights_sha256"]
    assert len(digests) == 2 and len(set(digests)) == 1 and b["weights_sha256"] == digests
    assert state_digest(final_objective(tmp_path / "out" / "checkpoints")) == digests[0]
    assert digests == uninterrupted["results"][0]["weights_sha256"]


def test_sigkilled_run_resumes_to_the_same_weights(uninterrupted, tiny_data, tmp_path, launches, params):
    """SIGKILL torchrun and both workers after the first checkpoint appears, start it again: it resumes
    from the newest checkpoint and ends bit-identical to the uninterrupted run (CPU, fixed seeds: the
    same ops in the same order; the step is the whole data position)."""
    cfg, out = params(tmp_path), tmp_path / "out"
    launches.append(torchrun(tmp_path, cfg, tiny_data, out, STANDALONE, "killed"))
    deadline = time.monotonic() + TIMEOUT_S
    while not list(out.glob("checkpoints/video-*/step_*.pt")):
        assert launches[0].proc.poll() is None, f"exited early:\n{launches[0].log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    assert launches[0].proc.poll() is None
    kill_tree(launches[0].proc)
    assert launches[0].proc.returncode == -signal.SIGKILL
    assert not (out / "encoder.pt").exists(), "the kill must land mid-run"
    (run_dir,) = (out / "checkpoints").iterdir()
    killed_at = max(int(p.stem.split("_")[1]) for p in run_dir.glob("step_*.pt"))
    assert 0 < killed_at < STEPS

    launches.append(torchrun(tmp_path, cfg, tiny_data, out, STANDALONE, "resumed"))
    results = launches[1].wait()
    assert "resuming at step" in launches[1].log.read_text()
    assert all(killed_at <= r["resumed_from"] < STEPS for r in results)
    assert results[0]["weights_sha256"] == uninterrupted["results"][0]["weights_sha256"]
    final = final_objective(out / "checkpoints")
    assert all(torch.equal(final[k], v) for k, v in uninterrupted["objective"].items())
    # keep_last=2 and nothing half-written left behind
    assert sorted(p.name for p in run_dir.iterdir()) == [f"step_{STEPS - 2:08d}.pt", f"step_{STEPS:08d}.pt"]
