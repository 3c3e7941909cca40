"""Training checkpoints: written every `pretrain.checkpoint_every` steps and at the end, the last
`pretrain.keep_last` kept, the newest valid one resumed from.

Layout (a local directory or s3://): `{pretrain.checkpoint_dir}/{variant}-{run}/step_{step:08d}.pt`.
`run` is a short hash of everything that decides the run's trajectory: the seed, the model, the
pretrain knobs that change the maths, the variant's step count (the lr schedule depends on it) and
the dataset digest. A run with other params therefore never resumes from, prunes or overwrites
another run's checkpoints. Knobs that change only how a run executes (`OPERATIONAL`: nproc,
micro_batch, threads, compile, ...) are left out, so a run may resume on another number of
processes: the data order and every random draw depend on (seed, step, position in the global
batch) only, so the step is the whole data position.

Crash safety:
- a checkpoint appears under its name only when complete (temp file, fsync, rename; an s3 object
  is visible only once its upload completed), so a kill at any moment leaves the older ones intact;
- older checkpoints are pruned only after the new one is complete;
- resume takes the newest checkpoint that loads and belongs to this run. A newer one that does not
  load is reported and skipped: the trainer never leaves a partial file under a checkpoint name, so
  such a file was damaged outside it, and the older checkpoint lies on the same deterministic
  trajectory (the result is unchanged; only `checkpoint_every` steps are redone). Failing instead
  would make every automatic restart of a cluster job fail the same way. When checkpoints exist but
  none loads, resume fails with a list of what is wrong with each (never a silent restart from 0).
- each checkpoint records its weights' sha256 (`objective_sha256`); one whose weights no longer match
  (changed after they were written) is skipped like a damaged one, naming both digests.

Only rank 0 touches storage; what it loads is broadcast to the other ranks, so nodes need no shared
filesystem. On a cluster, point `pretrain.checkpoint_dir` at s3:// or a persistent volume: after a
restart, rank 0 may run on another node.
"""
from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from videossl import storage
from videossl.stages import STAGES
from videossl.config import Config
from videossl.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, state_digest
from videossl.train import distributed
from videossl.train.distributed import DistEnv

KIND = "train"  # training checkpoints, as opposed to the exported encoder.pt / frame_encoder.pt
WEIGHTS_DIGEST = "objective_sha256"  # the checkpoint's weights' digest, recorded beside them
NAME = re.compile(r"step_(\d{8})\.pt$")
# pretrain knobs that change how a run executes, not what it computes: not part of the run's identity.
# A knob missing here only makes a changed value start a new run (safe); never list one that changes
# the maths. (`steps`/`baseline_steps`: the variant's own step count is added back.)
OPERATIONAL = frozenset({"nproc", "micro_batch", "threads", "num_workers", "log_every", "checkpoint_every",
                         "checkpoint_dir", "keep_last", "resume", "compile", "activation_checkpointing", "precision",
                         "metrics_port", "metrics_host", "system_metrics_interval", "steps", "baseline_steps"})


# The code that computes a run: a run never resumes from checkpoints that other code wrote (after an
# edit, `dvc repro` reruns the stage, and resuming the old run's final checkpoint would silently hand
# back the old model). Conservative: any edit to the pretrain stage's code starts a new run.
TRAINING_CODE = STAGES["pretrain"].code


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    root = Path(__file__).resolve().parents[1]  # the videossl package
    files = sorted(f for part in TRAINING_CODE for f in ((root / part).rglob("*.py") if (root / part).is_dir()
                                                          else [root / part]))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def run_spec(cfg: Config, variant: str, steps: int, dataset_digest: str, init: dict | None = None) -> dict:
    """What decides a run's trajectory, as plain data (stored in every checkpoint); `init`: the initial
    weights' record (train/init_from.py: another file under the same name is another run)."""
    pretrain = {k: v for k, v in cfg.pretrain.model_dump(mode="json").items() if k not in OPERATIONAL}
    return {"variant": variant, "steps": steps, "seed": cfg.seed, "dataset_digest": dataset_digest,
            "model": cfg.model.model_dump(mode="json"), "pretrain": pretrain, "code": code_digest(),
            **({"init": init} if init else {})}


def run_id(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# RNG state (every rank's, so a resumed rank continues its own streams)


CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_dir_for(configured: str | None, out_dir: str) -> str:
    """Where training checkpoints go: `pretrain.checkpoint_dir`, else `<out_dir>/checkpoints`
    (out_dir: the folder the final encoders go to, local or s3://)."""
    return configured or f"{str(out_dir).rstrip('/')}/{CHECKPOINT_SUBDIR}"


def rng_state() -> dict:
    """Tensors and plain values only: checkpoints load with torch.load(weights_only=True), which
    refuses numpy objects (and any code a crafted file would run)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(per_rank: list[dict], rank: int) -> None:
    """This rank's saved state; rank 0's when the run resumes on more ranks than it had."""
    state = per_rank[rank] if rank < len(per_rank) else per_rank[0]
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ----------------------------------------------------------------------------------------------


@dataclass
class Checkpointer:
    """The training checkpoints of one run. Every rank calls `save` and `resume` (both are
    collective); only rank 0 reads or writes storage."""

    root: str  # {checkpoint_dir}/{variant}-{run}
    run: str
    keep_last: int
    env: DistEnv

    @classmethod
    def for_run(cls, checkpoint_dir: str, spec: dict, keep_last: int, env: DistEnv) -> "Checkpointer":
        run = run_id(spec)
        return cls(f"{str(checkpoint_dir).rstrip('/')}/{spec['variant']}-{run}", run, keep_last, env)

    def path(self, step: int) -> str:
        return f"{self.root}/step_{step:08d}.pt"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoint files present, oldest first."""
        if storage.is_s3(self.root):
            names = [o.uri.rsplit("/", 1)[-1] for o in storage.list_s3(self.root + "/")]
        else:
            root = Path(self.root)
            names = [p.name for p in root.iterdir()] if root.is_dir() else []
        return sorted(int(m.group(1)) for m in map(NAME.fullmatch, names) if m)

    def save(self, step: int, state: dict) -> str | None:
        """Write `state` (+ step, run, every rank's RNG state) as the checkpoint of `step`, then prune."""
        rngs = distributed.all_gather(rng_state())
        if not self.env.is_main:
            return None
        # the weights' digest, written with them: a resume refuses weights changed after they were written
        dest = save_checkpoint({"kind": KIND, "run": self.run, "step": step, "rng": rngs, "world": self.env.world,
                                **state, WEIGHTS_DIGEST: state_digest(state["objective"])}, self.path(step))
        # prune only after the new file is complete; checkpoints past `step` (left by a run that got
        # further before a restart from an older checkpoint) are not ours to judge: leave them
        done = [s for s in self.steps() if s <= step]
        for old in done[:-self.keep_last]:
            storage.remove(self.path(old))
        return dest

    def resume(self) -> dict | None:
        """The newest valid checkpoint of this run on every rank, or None when there is none."""
        state, error = distributed.from_main(self._load_newest_valid() if self.env.is_main else None)
        if error:
            raise CheckpointError(error)
        return state

    def _load_newest_valid(self) -> tuple[dict | None, str | None]:
        if not storage.is_s3(self.root):
            for tmp in Path(self.root).glob(".step_*.tmp"):  # left by a kill during a save: never a checkpoint
                tmp.unlink(missing_ok=True)
        problems = []
        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                state = load_checkpoint(path)
            except CheckpointError as e:
                problems.append(str(e))
                print(f"warning: skipping checkpoint {path}: {e}", flush=True)
                continue
            if state.get("kind") != KIND or state.get("run") != self.run or state.get("step") != step:
                problems.append(f"{path} is not the training checkpoint of run {self.run} at step {step}")
                print(f"warning: skipping checkpoint {path}: {problems[-1]}", flush=True)
                continue
            recorded, actual = state.get(WEIGHTS_DIGEST), state_digest(state["objective"])
            if recorded != actual:
                problems.append(f"{path} holds weights sha256 {actual}, not the {recorded} written with them")
                print(f"warning: skipping checkpoint {path}: {problems[-1]}", flush=True)
                continue
            return state, None
        if problems:
            return None, (f"no valid checkpoint to resume from in {self.root}:\n  " + "\n  ".join(problems)
                          + "\nmove them away, or set pretrain.resume=false, to start again from step 0")
        return None, None
