"""The objective study: every pretraining objective, at equal training time on the same data, at
several budgets, scored by the same benchmark (`videossl study`).

Equal compute means equal training seconds on this machine: each objective's seconds per step are
measured first (a short in-process calibration run, the same batch and model), then each run gets
the steps that fill its budget. Every run is the real pretrain step (torchrun) followed by the real
probe-eval step with every probe of probe_eval.probes (the video model read with the probe chosen on
validation, each baseline with its strongest: the readouts of the benchmark itself); the bag of
frames, ordered frames, random init, raw pixels, motion statistics and the supervised ceiling depend
only on the data and the frame encoder, so they come from the feature and ceiling caches after the
first run. With several `seeds`, each objective and budget is pretrained once per seed (`seed`: the
encoder's initialisation, batch order and masks); the benchmark keeps the params' own seed, so every
run is scored on the same clips against the same ceiling.

Writes `out/study.json` (one row per objective and budget), `out/study.md` (the table),
`out/plots/study.json` (DVC plot data: temporal score against training seconds) and
`out/plots/study.png`.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from videossl.config import Config, dump_config, parse_config
from videossl.eval.tasks import CONTENT, HELD_OUT, of_kind
from videossl.eval.scores import (CI_HIGH, CI_LOW, HEADLINE, STRONGEST_BASELINE, SUPERVISED, SURPRISE, VIDEO,
                                  headline)
from videossl.models.checkpoint import CHECKPOINTS
from videossl.storage import write_text_atomic

def _objective(objective, shared_clips: bool = False, masking: str = "tubes") -> list[str]:
    """The overrides of one study row: pretrain.objective (a name, or the weights of several sharing the
    encoder), whether pretext and contrastive share their clips (objectives/pretext_contrastive.py) and
    how mae / jepa mask (tubes, or future: the clip's second half predicted from its first)."""
    return [f"pretrain.objective={json.dumps(objective)}", f"pretrain.contrastive.pretext_views={str(shared_clips).lower()}",
            f"pretrain.masking={masking}"]


# name -> its overrides
OBJECTIVES = {"mae": _objective("mae"), "jepa": _objective("jepa"),
              # the predictive variants: they are asked, zero-shot, how surprising a matched set's members are
              "mae/future": _objective("mae", masking="future"), "jepa/future": _objective("jepa", masking="future"),
              "pretext": _objective("pretext"),
              "contrastive": _objective("contrastive"),
              "pretext+contrastive": _objective({"pretext": 1.0, "contrastive": 0.5}),
              # candidates for content (object count), which the pretext heads trade away: MAE keeps
              # appearance; more contrastive weight keeps what persists across a video's clips
              "pretext+contrastive+mae": _objective({"pretext": 1.0, "contrastive": 0.5, "mae": 0.25}),
              "pretext+contrastive(1:1)": _objective({"pretext": 1.0, "contrastive": 1.0}),
              "pretext+contrastive(1:2)": _objective({"pretext": 0.5, "contrastive": 1.0}),
              # both on one pass: the contrastive pair carries the pretext transformation
              "pretext+contrastive/shared(1:0.5)": _objective({"pretext": 1.0, "contrastive": 0.5}, shared_clips=True),
              "pretext+contrastive/shared(1:1)": _objective({"pretext": 1.0, "contrastive": 1.0}, shared_clips=True),
              "pretext+contrastive/shared(1:2)": _objective({"pretext": 0.5, "contrastive": 1.0}, shared_clips=True)}
CALIBRATION_STEPS = 40  # steps timed per objective (after CALIBRATION_WARMUP)
CALIBRATION_WARMUP = 10


def _with(cfg: Config, overrides: list[str]) -> Config:
    return parse_config(dump_config(cfg), overrides)


def seconds_per_step(cfg: Config, data_dir: Path, objective: list[str], timed: int = CALIBRATION_STEPS) -> float:
    """Training seconds per step of `objective` (its overrides), measured in this process (no torchrun,
    no MLflow)."""
    from videossl.train.loop import train

    steps = CALIBRATION_WARMUP + timed
    with tempfile.TemporaryDirectory(prefix="videossl-calibrate-") as tmp:
        run = _with(cfg, [*objective, f"pretrain.steps={steps}", "pretrain.resume=false",
                          "pretrain.checkpoint_every=0", "pretrain.metrics_port=null", "pretrain.eval_every=0",
                          f"pretrain.log_every={CALIBRATION_WARMUP}", f"tracking.uri=sqlite:///{tmp}/mlruns.db",
                          f"tracking.artifacts={tmp}/mlartifacts", "pretrain.system_metrics_interval=null"])
        t0 = time.perf_counter()
        train(run, data_dir, f"{tmp}/warm.pt", "video", f"{tmp}/ckpt-warm")
        warm = time.perf_counter() - t0
        run = _with(run, [f"pretrain.steps={CALIBRATION_WARMUP}"])
        t0 = time.perf_counter()
        train(run, data_dir, f"{tmp}/short.pt", "video", f"{tmp}/ckpt-short")
        short = time.perf_counter() - t0
    return max(warm - short, 1e-3) / timed  # the difference cancels start-up and export


def study(cfg: Config, data_dir: str | Path, out_dir: str | Path, budgets: list[float],
          objectives: list[str] | None = None, calibration_steps: int = CALIBRATION_STEPS,
          seeds: list[int] | None = None) -> list[dict]:
    from videossl.steps.pretrain import pretrain
    from videossl.steps.probe_eval import probe_eval

    data_dir, out = Path(data_dir), Path(out_dir)
    names = objectives or list(OBJECTIVES)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}: choose from {list(OBJECTIVES)}")
    seconds_per_step(cfg, data_dir, OBJECTIVES[names[0]], 1)  # thrown away: the process's one-time start-up costs
    per_step = {n: seconds_per_step(cfg, data_dir, OBJECTIVES[n], calibration_steps) for n in names}
    print("study: seconds per step " + ", ".join(f"{n} {s:.3f}" for n, s in per_step.items()), flush=True)
    # the frame encoder (bag-of-frames baseline) does not depend on the objective: trained once, shared
    frames_dir = out / "frames"
    pretrain(cfg, data_dir, frames_dir, variants=("frames",))
    rows = _committed(out)  # the rows of earlier invocations stay; a row of the same objective and budget is replaced
    for budget, name, seed in ((b, n, sd) for b in sorted(budgets) for n in names for sd in seeds or [cfg.seed]):
            steps = max(1, int(round(budget / per_step[name])))
            run = _with(cfg, [*OBJECTIVES[name], f"pretrain.steps={steps}"])
            tag = f"{name}-{int(budget)}s" + ("" if seed == cfg.seed else f"-seed{seed}")
            print(f"study: {tag}: {steps} steps", flush=True)
            models = out / "runs" / tag / "pretrain"
            summary = pretrain(_with(run, [f"seed={seed}"]), data_dir, models, variants=("video",))
            shutil.copyfile(frames_dir / CHECKPOINTS["frames"], models / CHECKPOINTS["frames"])
            metrics = probe_eval(run, data_dir, models, out / "runs" / tag / "eval")
            head = metrics.get(HEADLINE, {})
            row = {"objective": name, "budget_seconds": budget, "seed": seed, "steps": steps,
                   "seconds_per_step": round(per_step[name], 4),
                   "compute_seconds": round(steps * per_step[name], 1),  # the x axis: quiet-machine seconds
                   "train_seconds": summary["video"]["seconds"],  # as measured in this run (load included)
                   HEADLINE: head.get("video"), HEADLINE + CI_LOW: head.get("video" + CI_LOW),
                   HEADLINE + CI_HIGH: head.get("video" + CI_HIGH)}
            per_task = headline(metrics, STUDIED)  # the video model, the strongest baseline, the ceiling
            for task in STUDIED:
                if task in per_task:
                    row[task] = per_task[task].get(VIDEO)
                    row[f"{task}_supervised"] = per_task[task].get(SUPERVISED)
                    row[f"{task}_strongest_baseline"] = per_task[task].get(STRONGEST_BASELINE)
                if task in metrics and VIDEO + SURPRISE in metrics[task]:  # the predictor's own reading, zero-shot
                    row[f"{task}_surprise"] = metrics[task][VIDEO + SURPRISE]
            rows = [r for r in rows if _key(r) != (name, budget, seed)] + [row]
            _write(out, rows)
    return rows


def _key(row: dict) -> tuple:
    """A row's identity: an objective, a budget and a pretraining seed (rows of older studies: seed 0)."""
    return row["objective"], row["budget_seconds"], row.get("seed", 0)


def _committed(out: Path) -> list[dict]:
    path = out / "study.json"
    return json.loads(path.read_text()) if path.is_file() else []


STUDIED = (*of_kind(HELD_OUT), *of_kind(CONTENT))  # the held-out tasks, then the content controls
PLOTTED = (HEADLINE, *of_kind(HELD_OUT))


def _write(out: Path, rows: list[dict]) -> None:
    write_text_atomic(out / "study.json", json.dumps(rows, indent=2) + "\n")
    write_text_atomic(out / "plots" / "study.json", json.dumps(
        [{"objective": r["objective"], "compute_seconds": r["compute_seconds"], **{k: r.get(k) for k in PLOTTED}}
         for r in rows], indent=1) + "\n")
    tasks = [t for t in STUDIED if any(t in r for r in rows)]
    lines = ["| objective | planned budget (s) | seed | steps | compute (s) | " + HEADLINE + " [95% CI] | "
             + " | ".join(tasks) + " | surprise, zero-shot |", "|---" * (7 + len(tasks)) + "|"]
    for r in rows:
        head = "—" if r[HEADLINE] is None else (f"{r[HEADLINE]:.3f} [{r[HEADLINE + CI_LOW]:.2f}, "
                                                 f"{r[HEADLINE + CI_HIGH]:.2f}]")
        budget = r["budget_seconds"]
        budget = f"{budget:g}" if isinstance(budget, (int, float)) else budget
        surprise = ", ".join(f"{t} {r[t + '_surprise']:.2f}" for t in STUDIED if r.get(t + "_surprise") is not None)
        lines.append(f"| {r['objective']} | {budget} | {r.get('seed', 0)} | {r['steps']} | {r['compute_seconds']:g} | {head} | "
                     + " | ".join("—" if r.get(t) is None else f"{r[t]:.3f}" for t in tasks) + f" | {surprise or '—'} |")
    write_text_atomic(out / "study.md", "\n".join(lines) + "\n")
    _plot(rows, out / "plots" / "study.png")


def _seed_means(rows: list[dict], key: str) -> list[dict]:
    """One point per budget, in order of compute: `key` (and its interval) averaged over the seeds' rows."""
    import numpy as np

    by_budget: dict = {}
    for r in rows:
        by_budget.setdefault(r["budget_seconds"], []).append(r)
    keys = [k for k in (key, key + CI_LOW, key + CI_HIGH, "compute_seconds") if all(k in r for r in rows)]
    return sorted(({k: float(np.mean([r[k] for r in same])) for k in keys} for same in by_budget.values()),
                  key=lambda r: r["compute_seconds"])


def _plot(rows: list[dict], dest: Path) -> None:
    """The headline and each temporal task against training compute, one line per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(3.2 * len(PLOTTED), 3.4), dpi=110, sharex=True)
    for ax, key in zip(axes, PLOTTED):
        for name in dict.fromkeys(r["objective"] for r in rows):
            mine = _seed_means([r for r in rows if r["objective"] == name and r.get(key) is not None], key)
            if not mine:
                continue
            x, y = [r["compute_seconds"] for r in mine], [r[key] for r in mine]
            if key == HEADLINE:
                err = [[r[key] - r[key + CI_LOW] for r in mine], [r[key + CI_HIGH] - r[key] for r in mine]]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
            else:
                ax.plot(x, y, marker="o", label=name)
        ceiling = [r.get(f"{key}_supervised") for r in rows if r.get(f"{key}_supervised") is not None]
        frames = [r.get(f"{key}_strongest_baseline") for r in rows if r.get(f"{key}_strongest_baseline") is not None]
        if key == HEADLINE:
            ceiling, frames = [1.0], [0.0]
        if ceiling:
            ax.axhline(ceiling[0], color="k", linewidth=0.8, linestyle="dotted", label="supervised ceiling")
        if frames:
            ax.axhline(frames[0], color="k", linewidth=0.8, linestyle="dashed", label="strongest baseline")
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.set_xlabel("training compute (s on 2 CPU cores)", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("score (temporal score: 0 = strongest baseline, 1 = ceiling)", fontsize=8)
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest)
    plt.close(fig)
