"""Ceiling step: the supervised ceiling of the benchmark's held-out tasks (eval/ceiling.py), once per dataset.

The ceiling is a property of the benchmark's data, not of any model: a small video network trained
with each task's labels says how much of the task its clips allow. So it is its own step between
ingest and probe-eval. DVC trains it once per dataset and params, while every new encoder is
evaluated against the same record. On Kubeflow it runs beside pretraining. probe-eval reads the record
and refuses one trained for another dataset or other settings.

Writes to `out_dir`: ceiling.json (per held-out task: the test units' outcomes, the validation score
that chose the network, its step, and the identity it was trained for), metrics.json (validation
and test accuracy per task, DVC metrics) and timings.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from videossl import stages
from videossl.config import Config
from videossl.data.shards import ClipStore, dataset_digest
from videossl.errors import StepError
from videossl.eval import benchmark
from videossl.eval import ceiling as supervised
from videossl.storage import write_text_atomic


class CeilingError(StepError):
    pass


def ceiling(cfg: Config, data_dir: str | Path, out_dir: str | Path) -> dict:
    """Train (or take from probe_eval.cache_dir) the held-out tasks' ceiling of the dataset in `data_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store = ClipStore(data_dir)
    digest = dataset_digest(data_dir)
    held = benchmark.held_out_tasks(cfg, store)
    try:
        benchmark.check(held)
    except benchmark.BenchmarkError as e:
        raise CeilingError(str(e)) from None
    result = supervised.CeilingResult({}, {}, {}, 0.0)
    if held:
        result = benchmark.supervised_ceiling(cfg, store, held, digest)
    record = supervised.to_record(result, benchmark.ceiling_identity(cfg, held, digest))
    write_text_atomic(out / supervised.CEILING, json.dumps(record) + "\n")
    metrics = {t.name: {"val": round(result.val_accuracy[t.name], 4), "test": round(float(result.correct[t.name].mean()), 4),
                        "step": result.step[t.name]} for t in held}
    stages.write_metrics(out, metrics, {"seconds": round(time.perf_counter() - started, 2),
                                        "trained_seconds": round(result.seconds, 2)})
    for name, m in metrics.items():
        print(f"ceiling: {name:<16} validation {m['val']:.3f}  test {m['test']:.3f}  (step {m['step']})")
    print(f"ceiling: {len(held)} held-out tasks in {time.perf_counter() - started:.1f} s; wrote {out}")
    return {"tasks": metrics, "dataset_digest": digest}


def read(cfg: Config, store: ClipStore, digest: str, ceiling_dir: str | Path) -> supervised.CeilingResult:
    """The ceiling step's record in `ceiling_dir`, checked against this evaluation's dataset and params."""
    path = Path(ceiling_dir) / supervised.CEILING
    try:
        return supervised.read_record(path, benchmark.ceiling_identity(cfg, benchmark.held_out_tasks(cfg, store), digest))
    except supervised.CeilingMismatch as e:
        raise CeilingError(str(e)) from None
    except (OSError, ValueError, KeyError) as e:
        raise CeilingError(f"cannot read the ceiling {path}: {e}; run `videossl ceiling` again") from None
