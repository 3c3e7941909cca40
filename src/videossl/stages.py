"""The contract between the four steps: what each one reads, where it writes, and its file names.

`STAGES` is the one list of each step's params sections and code (paths under the videossl package).
dvc.yaml states the same lists, because DVC cannot import them; tests/integration/test_dvc_pipeline.py fails when
the two differ. The training run's identity (train/checkpointing.py) hashes the pretrain stage's
code, so "DVC reruns the stage" and "training resumes nothing" change together.

Every step writes three kinds of files:
- its record (`ingest.json`, `pretrain.json`, `scores.json`, `registration.json`): everything, for
  the next step and for a reader;
- `metrics.json`: a few dozen headline numbers, the stage's DVC metrics (`dvc metrics diff`,
  `dvc exp show` stay readable);
- `timings.json`: wall-clock measurements, different on every run, so they are not committed and a
  rerun with the same inputs leaves `git status` clean.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    params: tuple[str, ...]  # params.yaml sections whose change reruns the step (dvc.yaml `params`)
    code: tuple[str, ...]    # its code under src/videossl (dvc.yaml `deps`)
    out: str                 # where it writes, relative to a run's root (the repository for DVC)
    # Sections the step's code also reads without DVC rerunning it when they change: operational
    # settings (tracking, cluster) and an upstream step's section, whose change reaches this step
    # through that step's outputs anyway. On KFP a task is handed `sections` and nothing else
    # (videossl.step_params), so its cache key and output folder change with those alone.
    reads: tuple[str, ...] = ()

    @property
    def sections(self) -> tuple[str, ...]:
        return self.params + tuple(s for s in self.reads if s not in self.params)


STAGES = {
    # cluster: a data version resolves through cluster.data_repo / data_remote
    "ingest": Stage(("seed", "ingest"), ("data", "steps/ingest.py"), "data/ingest", reads=("cluster",)),
    # ingest: the clip geometry and fps the checkpoint records; cluster: the multi-node job it launches
    "pretrain": Stage(("seed", "model", "pretrain"),
                      ("models", "objectives", "train", "masks.py", "data/transforms.py", "steps/pretrain.py"),
                      "outputs/pretrain", reads=("ingest", "tracking", "cluster")),
    # the held-out tasks and the ceiling's settings are probe_eval's (the ceiling is cut exactly as the probes
    # are); a probe-only change reruns the stage, which then finds its network in probe_eval.cache_dir
    "ceiling": Stage(("seed", "probe_eval"), ("eval", "steps/ceiling.py"), "outputs/ceiling", reads=("ingest",)),
    "probe_eval": Stage(("seed", "probe_eval"), ("eval", "steps/ceiling.py", "steps/probe_eval.py"), "outputs/eval",
                        reads=("ingest", "tracking")),
    # every section: the registered model's run logs all params, and the gate reads probe_eval.tasks
    "register": Stage(("tracking", "register"),
                      ("registry.py", "model_card.py", "gate.py", "tracking.py", "clip_embedder.py", "eval/report.py",
                       "eval/scores.py", "steps/register.py"),
                      "outputs/register", reads=("seed", "ingest", "model", "pretrain", "probe_eval", "cluster")),
}

CODE_ROOT = "src/videossl"  # where STAGES' code paths live in the repository
METRICS = "metrics.json"    # headline numbers (DVC metrics)
TIMINGS = "timings.json"    # wall-clock measurements (not committed)
# the register step's files (outputs/register/, none in git: run ids and versions differ every run)
REGISTRATION = "registration.json"  # what was registered: version, aliases, the gate's decision
CARD = "model_card.md"
# What was submitted to the registry, without run ids or versions: the same bytes whenever the same
# model is submitted, so DVC can track it (dvc.yaml `outs`, cache: false). A clone has none, so its
# `make run` registers its model; a second `make run` finds it and registers nothing.
SUBMITTED = "submitted.json"


def numbers(tree: dict) -> dict:
    """`tree` with only its numeric leaves (no bools, no strings, no lists); empty branches dropped."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            if sub := numbers(v):
                out[k] = sub
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = v
    return out


def write_metrics(out_dir: str | Path, headline: dict, timings: dict) -> None:
    """The stage's `metrics.json` (numbers only) and `timings.json`, each written atomically."""
    from videossl.storage import write_text_atomic

    out = Path(out_dir)
    write_text_atomic(out / METRICS, json.dumps(numbers(headline), indent=2) + "\n")
    write_text_atomic(out / TIMINGS, json.dumps(timings, indent=2) + "\n")
