"""Training checkpoints and resume, in process (one rank; the SIGKILLed multi-process run is in
test_distributed.py): bit-exact resume, a damaged newest checkpoint, none valid, NaN/inf losses,
keep-last pruning, other params never resuming, s3://.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.tiny import tiny_config, tracking_overrides
from videossl import objectives
from videossl.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from videossl.train.loop import TrainingError, train

STEPS = 6


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    """In-process training is one rank, whatever the environment the tests run in."""
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def params(tiny_root):
    """Tiny params for STEPS steps, checkpoints every 2; MLflow runs go to the session's store (a new
    sqlite store costs ~5 s to create) under an experiment of their own."""
    def make(root: Path, *extra: str):
        return tiny_config(root, f"pretrain.steps={STEPS}", "pretrain.checkpoint_every=2", "pretrain.keep_last=3",
                           f"pretrain.log_every={STEPS}", "pretrain.threads=1", *tracking_overrides(tiny_root),
                           "tracking.experiment=tests-resume", *extra)
    return make


def run(cfg, data: Path, root: Path, checkpoints: Path | str) -> tuple[dict, dict]:
    """Train the video encoder; (result, the exported encoder's weights)."""
    result = train(cfg, data, str(root / "encoder.pt"), "video", str(checkpoints))
    return result, load_checkpoint(root / "encoder.pt")["encoder"]


def steps_in(checkpoints: Path) -> list[int]:
    (run_dir,) = checkpoints.iterdir()
    return sorted(int(p.stem.split("_")[1]) for p in run_dir.glob("step_*.pt"))


def newest(checkpoints: Path) -> Path:
    (run_dir,) = checkpoints.iterdir()
    return max(run_dir.glob("step_*.pt"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_is_bit_exact_and_skips_a_damaged_newest_checkpoint(params, tiny_data, tmp_path, capsys):
    """Policy: a newest checkpoint that does not load is reported and skipped, the one before is used.
    The trainer never leaves half a file under a checkpoint name (temp file + rename), so a damaged
    one was damaged outside it; the older checkpoint lies on the same deterministic trajectory, so the
    result is bit-identical and only checkpoint_every steps are redone."""
    cfg, ckpts = params(tmp_path), tmp_path / "checkpoints"
    first, weights = run(cfg, tiny_data, tmp_path / "a", ckpts)
    assert first["resumed_from"] == 0 and steps_in(ckpts) == [2, 4, 6]

    truncate(newest(ckpts))
    result, resumed = run(cfg, tiny_data, tmp_path / "b", ckpts)
    assert "skipping checkpoint" in capsys.readouterr().out
    assert result["resumed_from"] == 4
    assert result["weights_sha256"] == first["weights_sha256"]
    assert all(torch.equal(resumed[k], v) for k, v in weights.items())
    assert load_checkpoint(newest(ckpts))["step"] == STEPS  # the damaged file was replaced by a good one

    # weights changed after they were written (a whole, loadable file): its recorded digest says so
    edited = load_checkpoint(newest(ckpts))
    edited["objective"] = {k: v + 1 if v.is_floating_point() else v for k, v in edited["objective"].items()}
    save_checkpoint({k: v for k, v in edited.items() if k != "format"}, newest(ckpts))
    result, resumed = run(cfg, tiny_data, tmp_path / "b2", ckpts)
    assert re.search(r"step_00000006\.pt holds weights sha256 [0-9a-f]{64}, not the [0-9a-f]{64} written with them",
                     capsys.readouterr().out)
    assert result["resumed_from"] == 4 and result["weights_sha256"] == first["weights_sha256"]

    result, _ = run(cfg, tiny_data, tmp_path / "c", ckpts)  # a finished run resumes at its end: no step
    assert result["resumed_from"] == STEPS and result["weights_sha256"] == first["weights_sha256"]


def test_no_valid_checkpoint_is_a_clear_error_and_nothing_is_deleted(params, tiny_data, tmp_path):
    cfg, ckpts = params(tmp_path, f"pretrain.steps={STEPS // 2}"), tmp_path / "checkpoints"
    run(cfg, tiny_data, tmp_path / "a", ckpts)
    (run_dir,) = ckpts.iterdir()
    for path in run_dir.glob("step_*.pt"):
        truncate(path)
    damaged = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(CheckpointError, match=r"(?s)no valid checkpoint to resume from .*step_00000002\.pt is "
                                              r"unreadable or corrupt.*pretrain\.resume=false"):
        run(cfg, tiny_data, tmp_path / "b", ckpts)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == damaged

    result, _ = run(params(tmp_path, f"pretrain.steps={STEPS // 2}", "pretrain.resume=false"), tiny_data,
                    tmp_path / "c", ckpts)  # resume=false starts over and writes good checkpoints again
    assert result["resumed_from"] == 0 and load_checkpoint(newest(ckpts))["step"] == STEPS // 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
        bad, params, tiny_data, tmp_path, monkeypatch):
    cfg, ckpts = params(tmp_path), tmp_path / "checkpoints"
    build = objectives.build

    def diverging(*args, **kwargs):  # the objective's loss turns `bad` at step 3 (after the step-2 checkpoint)
        model, recipe = build(*args, **kwargs)
        forward, calls = model.forward, []

        def forward_bad(batch):
            loss, logs = forward(batch)
            calls.append(1)
            return (loss * bad if len(calls) > 3 else loss), logs

        model.forward = forward_bad
        return model, recipe

    monkeypatch.setattr(objectives, "build", diverging)
    with pytest.raises(TrainingError, match=r"non-finite in 1 step\(s\) up to step 4; those steps were skipped"):
        run(cfg, tiny_data, tmp_path / "a", ckpts)
    assert steps_in(ckpts) == [2] and not (tmp_path / "a" / "encoder.pt").exists()
    good = load_checkpoint(newest(ckpts))
    assert all(torch.isfinite(v).all() for v in good["objective"].values())

    monkeypatch.setattr(objectives, "build", build)  # fixed: the run continues from the last good checkpoint
    result, _ = run(cfg, tiny_data, tmp_path / "b", ckpts)
    assert result["resumed_from"] == 2 and steps_in(ckpts) == [2, 4, 6]


def test_checkpoints_are_pruned_to_keep_last_and_other_params_never_resume(params, tiny_data, tmp_path):
    ckpts = tmp_path / "checkpoints"
    run(params(tmp_path, "pretrain.checkpoint_every=1", "pretrain.keep_last=2"), tiny_data, tmp_path / "a", ckpts)
    assert steps_in(ckpts) == [STEPS - 1, STEPS]
    # a run that computes something else (here: another lr) gets a run directory of its own
    result, _ = run(params(tmp_path, "pretrain.lr=3.0e-3"), tiny_data, tmp_path / "b", ckpts)
    assert result["resumed_from"] == 0 and len(list(ckpts.iterdir())) == 2
    # knobs that change only how a run executes (processes, micro-batches, threads) keep its identity
    result, _ = run(params(tmp_path, "pretrain.checkpoint_every=1", "pretrain.micro_batch=2", "pretrain.threads=2"),
                    tiny_data, tmp_path / "c", ckpts)
    assert result["resumed_from"] == STEPS


def test_other_training_code_never_resumes(params, tiny_data, tmp_path, monkeypatch):
    """After an edit to the training code a finished run is not 'resumed' (which would hand back the
    old model under the new code's name): the code's digest is part of the run's identity."""
    from videossl.train import checkpointing

    ckpts = tmp_path / "checkpoints"
    run(params(tmp_path), tiny_data, tmp_path / "a", ckpts)
    assert run(params(tmp_path), tiny_data, tmp_path / "b", ckpts)[0]["resumed_from"] == STEPS  # same code: resumes
    monkeypatch.setattr(checkpointing, "code_digest", lambda: "edited-code")
    result, _ = run(params(tmp_path), tiny_data, tmp_path / "c", ckpts)
    assert result["resumed_from"] == 0 and len(list(ckpts.iterdir())) == 2


def test_checkpoints_on_s3_are_complete_pruned_and_resumable(params, tiny_data, tmp_path, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    bucket = s3_server.make_bucket("train-checkpoints")
    cfg = params(tmp_path, "pretrain.checkpoint_every=1", "pretrain.keep_last=2")
    first, _ = run(cfg, tiny_data, tmp_path / "a", f"s3://{bucket}/{tmp_path.name}")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix=tmp_path.name)["Contents"]]
    assert [k.rsplit("/", 1)[1] for k in sorted(keys)] == [f"step_{STEPS - 1:08d}.pt", f"step_{STEPS:08d}.pt"]

    result, _ = run(cfg, tiny_data, tmp_path / "b", f"s3://{bucket}/{tmp_path.name}")
    assert result["resumed_from"] == STEPS and result["weights_sha256"] == first["weights_sha256"]
