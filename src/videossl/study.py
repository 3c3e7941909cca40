"""The objective study: every pretraining objective, at equal training compute on the same data, at
several budgets, scored by the same benchmark (`videossl study`).

Equal compute means equal floating-point operations: each objective's FLOPs per training step
(forward and backward over the global batch) are counted by torch's FLOP counter on the real model
and batch (train/loop.step_flops), and each run gets the steps that fill its budget in TFLOP. A count
is the same on every machine and in every precision, so the same command trains the same steps
anywhere (seconds, which an earlier version of the study equalised, differ 2-3x between CPUs with and
without bf16, and between objectives more than their FLOPs do: MAE's masking and gathering cost time
a FLOP count does not see). Every run is the real pretrain step (torchrun) followed by the real
probe-eval step with every probe of probe_eval.probes (the video model read with the probe chosen on
validation, each baseline with its strongest: the readouts of the benchmark itself); the bag of
frames, ordered frames, random init, raw pixels, motion statistics and the supervised ceiling depend
only on the data and the frame encoder, so they come from the feature and ceiling caches after the
first run. With several `seeds`, each objective and budget is pretrained once per seed (`seed`: the
encoder's initialisation, batch order and masks); the benchmark keeps the params' own seed, so every
run is scored on the same clips against the same ceiling.

Writes `out/study.json` (one row per objective, budget and seed), `out/study.md` (the table),
`out/plots/study.json` (DVC plot data: per objective and precision, the seed means at each budget),
`out/plots/study.png`, `out/seeds.md` (the seed means of every objective and budget trained with several
seeds) and `out/trend.md` (what a doubling of compute buys each objective on each held-out task, and the
compute at which its line reaches the targets; both study_trend.py). Rows of earlier invocations are
kept; rows from the seconds-budgeted version keep their planned seconds as their budget and get their
compute counted in TFLOP (steps x FLOPs per step), so every row sits on the same axis.
"""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from videossl.config import Config, ConfigError, dump_config, parse_config
from videossl.eval.tasks import CONTENT, HELD_OUT, of_kind
from videossl.eval.scores import (CHOSEN, CI_HIGH, CI_LOW, HEADLINE, HELD_FRAME, STRONGEST_BASELINE, SUPERVISED, SURPRISE, VALIDATION,
                                  VIDEO, headline)
from videossl.models.checkpoint import CHECKPOINTS
from videossl.storage import write_text_atomic
from videossl.study_trend import plot_points, seed_table, trend_markdown, trends

if TYPE_CHECKING:
    from typing import Callable

def _objective(objective, shared_clips: bool = False, masking: str = "tubes", background: str = "keep") -> list[str]:
    """The overrides of one study row: pretrain.objective (a name, or the weights of several sharing the
    encoder), whether pretext and contrastive share their clips (objectives/pretext_contrastive.py), how
    mae / jepa mask (tubes, or future: the clip's second half predicted from its first) and whether the
    contrastive pair keeps its video's background or swaps it (objectives/contrastive.swap_backgrounds)."""
    return [f"pretrain.objective={json.dumps(objective)}", f"pretrain.contrastive.pretext_views={str(shared_clips).lower()}",
            f"pretrain.masking={masking}", f"pretrain.contrastive.background={background}"]


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
              "pretext+contrastive/shared(1:2)": _objective({"pretext": 0.5, "contrastive": 1.0}, shared_clips=True),
              # the default with each clip of a pair on another clip's background: the pair can no longer
              # be matched by the video's static bed, only by what moves (FAME, Background Erasing)
              "pretext+contrastive/shared(1:1)/swap": _objective({"pretext": 1.0, "contrastive": 1.0}, shared_clips=True,
                                                                background="swap"),
              "contrastive/swap": _objective("contrastive", background="swap"),
              # the default beside a predictor of the clip's second half: a loss that depends on acceleration
              # (which gravity_law asks about) on the encoder the default trains
              "pretext+contrastive/shared(1:1)+jepa/future": _objective({"pretext": 1.0, "contrastive": 1.0, "jepa": 0.5},
                                                                         shared_clips=True, masking="future"),
              # the same with MAE's predictor of the second half, the one objective whose gravity_law rises
              # with compute (docs/study.md): the default carries dye_arrow and permanence, the predictor gravity_law
              "pretext+contrastive/shared(1:1)+mae/future": _objective({"pretext": 1.0, "contrastive": 1.0, "mae": 0.5},
                                                                        shared_clips=True, masking="future")}
TERA = 1e12
TUNED = "tuned.json"  # the settings `tune` chose per objective, read by `study`
VALIDATION_SCORE = "validation_score"
SECONDS_STUDY_PRECISION = "fp32"  # the seconds-budgeted study ran on a CPU without bf16 (docs/study.md)


def _with(cfg: Config, overrides: list[str]) -> Config:
    return parse_config(dump_config(cfg), overrides)


class Trainer:
    """What every run of the study and of its tuning shares: the data, the frame encoder (trained once:
    the bag-of-frames baseline does not depend on the objective), the precision, and each objective's
    FLOPs per step. `run` is one row: pretrained (the real pretrain step) and scored (the real probe-eval
    step, every probe)."""

    def __init__(self, cfg: Config, data_dir: Path, out: Path):
        import torch

        from videossl.steps.pretrain import pretrain
        from videossl.train.precision import autocast_dtype

        self.cfg, self.data_dir, self.out = cfg, data_dir, out
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # the same steps train other weights in bf16 than in fp32 (and score differently): each row says which
        self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[
            autocast_dtype(cfg.pretrain.precision, device)]
        self.frames_dir = out / "frames"
        pretrain(cfg, data_dir, self.frames_dir, variants=("frames",))
        self._flops: dict[tuple[str, ...], float] = {}

    def flops(self, overrides: list[str]) -> float:
        from videossl.train.loop import step_flops

        key = tuple(overrides)
        if key not in self._flops:
            self._flops[key] = step_flops(_with(self.cfg, overrides), self.data_dir)
        return self._flops[key]

    def run(self, name: str, overrides: list[str], budget: float, seed: int, tag: str) -> dict:
        """The row of `name` trained under `overrides` for `budget` TFLOP from `seed`."""
        from videossl.steps.pretrain import pretrain
        from videossl.steps.probe_eval import probe_eval

        per_step = self.flops(overrides)
        steps = max(1, int(round(budget * TERA / per_step)))
        run = _with(self.cfg, [*overrides, f"pretrain.steps={steps}"])
        print(f"study: {tag}: {steps} steps", flush=True)
        models = self.out / "runs" / tag / "pretrain"
        summary = pretrain(_with(run, [f"seed={seed}"]), self.data_dir, models, variants=("video",))
        shutil.copyfile(self.frames_dir / CHECKPOINTS["frames"], models / CHECKPOINTS["frames"])
        metrics = probe_eval(run, self.data_dir, models, self.out / "runs" / tag / "eval")
        head = metrics.get(HEADLINE, {})
        row = {"objective": name, "budget": f"{budget:g} TFLOP", "seed": seed, "steps": steps,
               "gflop_per_step": round(per_step / 1e9, 4), "precision": self.precision,
               "compute_tflop": round(steps * per_step / TERA, 3),  # the x axis
               "train_seconds": summary["video"]["seconds"],  # as measured in this run, on this machine
               HEADLINE: head.get("video"), HEADLINE + CI_LOW: head.get("video" + CI_LOW),
               HEADLINE + CI_HIGH: head.get("video" + CI_HIGH), VALIDATION_SCORE: validation_score(metrics)}
        per_task = headline(metrics, STUDIED)  # the video model, the strongest baseline, the ceiling
        for task in STUDIED:
            if task in per_task:
                row[task] = per_task[task].get(VIDEO)
                row[f"{task}_supervised"] = per_task[task].get(SUPERVISED)
                row[f"{task}_strongest_baseline"] = per_task[task].get(STRONGEST_BASELINE)
            if task in metrics and VIDEO + SURPRISE in metrics[task]:  # the predictor's own reading, zero-shot
                row[f"{task}_surprise"] = metrics[task][VIDEO + SURPRISE]
                row[f"{task}_held_frame_surprise"] = metrics[task].get(HELD_FRAME + SURPRISE)  # no learning
        return row


def validation_score(metrics: dict) -> float | None:
    """What tuning chooses settings by, never test: the mean over the headline's tasks of the video model's
    validation accuracy with the probe it was chosen by (validation videos of the benchmark's development
    split: the same for every run)."""
    tasks = metrics.get(HEADLINE, {}).get("tasks", "")
    values = [metrics[t].get(VIDEO + CHOSEN + VALIDATION) for t in tasks.split(",") if t in metrics]
    return round(sum(values) / len(values), 4) if values and None not in values else None


def study(cfg: Config, data_dir: str | Path, out_dir: str | Path, budgets: list[float],
          objectives: list[str] | None = None, seeds: list[int] | None = None) -> list[dict]:
    """Each objective at each budget (training TFLOP) and seed: pretrained, scored, tabled and plotted.
    An objective tuned before (`tune`, out/tuned.json) trains with the settings its tuning chose; the
    tuning's own trial of those settings at a budget and seed is that row, not trained again."""
    data_dir, out = Path(data_dir), Path(out_dir)
    names = objectives or list(OBJECTIVES)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}: choose from {list(OBJECTIVES)}")
    tuned = _tuned(out)
    overrides = {n: [*OBJECTIVES[n], *_settings(tuned.get(n, {}).get("settings", {}))] for n in names}
    trainer = Trainer(cfg, data_dir, out)
    print("study: GFLOP per step " + ", ".join(f"{n} {trainer.flops(overrides[n]) / 1e9:.2f}" for n in names), flush=True)
    # a committed seconds-budgeted row trained before any tuning: its compute is counted untuned
    rows = _committed(out, lambda name: trainer.flops(OBJECTIVES[name]))
    for budget, name, seed in ((b, n, sd) for b in sorted(budgets) for n in names for sd in seeds or [cfg.seed]):
        settings = tuned.get(name, {}).get("settings")
        # the trial tuning measured under the chosen settings, at this budget and seed, is this very run
        trial = next((t for t in tuned.get(name, {}).get("trials", []) if t["settings"] == settings
                      and t["budget"] == f"{budget:g} TFLOP" and t["seed"] == seed), None)
        if trial is not None:
            row = {k: v for k, v in trial.items() if k != "settings"}
            print(f"study: {name} at {budget:g} TFLOP, seed {seed}: the tuning trial of its settings", flush=True)
        else:
            tuned_tag = "" if variant({"objective": name, "settings": settings}, cfg) == name else "-tuned"
            tag = f"{name}{tuned_tag}-{budget:g}tflop" + ("" if seed == cfg.seed else f"-seed{seed}")
            row = trainer.run(name, overrides[name], budget, seed, tag)
        if settings:
            row["settings"] = settings
        rows = [r for r in rows if _key(r, cfg) != _key(row, cfg)] + [row]
        _write(out, rows, cfg)
    return rows


def tune(cfg: Config, data_dir: str | Path, out_dir: str | Path, objective: str, grid: dict[str, list],
         budget: float, seed: int | None = None) -> dict:
    """`objective` under every combination of `grid`'s values (param key -> the values to try) for
    `budget` TFLOP each, scored by the benchmark; the settings with the best validation score
    (`validation_score`, the development split, never test) are chosen and recorded in out/tuned.json,
    which later `study` runs of the objective train with. Every trial's test headline is recorded beside
    its validation score, to show what choosing on validation costs, never to choose. Trials measured
    before at the same budget and seed join the choice and are not retrained: a grid whose best value
    sat at its edge is extended by running `tune` again with the values beyond it."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}: choose from {list(OBJECTIVES)}")
    if not grid:
        raise ConfigError("tune needs at least one --grid KEY=[values]")
    if not of_kind(HELD_OUT, cfg.probe_eval.tasks):  # the validation score averages the headline's tasks
        raise ConfigError(f"probe_eval.tasks: tune chooses by held-out tasks, and {cfg.probe_eval.tasks} has none")
    data_dir, out = Path(data_dir), Path(out_dir)
    for key, values in grid.items():  # every value must be valid before anything trains
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--grid {key}: a YAML list of the values to try, e.g. {key}=[1, 2]")
        for v in values:
            _with(cfg, [*OBJECTIVES[objective], *_settings({key: v})])
    trainer = Trainer(cfg, data_dir, out)
    seed = cfg.seed if seed is None else seed
    # a grid extends the trials measured before at this budget and seed: they are kept, not retrained
    trials = [t for t in _tuned(out).get(objective, {}).get("trials", [])
              if t["budget"] == f"{budget:g} TFLOP" and t.get("seed", cfg.seed) == seed]
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        if any(t["settings"] == settings for t in trials):
            print(f"tune: {objective} {settings}: measured before, kept", flush=True)
            continue
        tag = f"tune/{objective}-{budget:g}tflop-{len(trials)}" + ("" if seed == cfg.seed else f"-seed{seed}")
        row = trainer.run(objective, [*OBJECTIVES[objective], *_settings(settings)], budget, seed, tag)
        trials.append({"settings": settings, **row})
        print(f"tune: {objective} {settings}: validation {row[VALIDATION_SCORE]}, test headline {row[HEADLINE]}",
              flush=True)
    scored = [t for t in trials if t[VALIDATION_SCORE] is not None]
    if not scored:
        raise ValueError(f"no trial of {objective} has a validation score: no held-out task's ceiling reached "
                         f"probe_eval.headline_ceiling, so the headline has no task")
    best = max(scored, key=lambda t: t[VALIDATION_SCORE])  # ties keep the earlier trial (the grid's order)
    tuned = _tuned(out)
    tuned[objective] = {"settings": best["settings"], "budget": f"{budget:g} TFLOP", "seed": seed,
                        VALIDATION_SCORE: best[VALIDATION_SCORE], "trials": trials}
    write_text_atomic(out / TUNED, json.dumps(tuned, indent=2) + "\n")
    _write_tuned(out, tuned)
    print(f"tune: {objective}: chose {best['settings']} (validation {best[VALIDATION_SCORE]}); {out / TUNED}", flush=True)
    return tuned[objective]


def _settings(settings: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in settings.items()]


def _tuned(out: Path) -> dict:
    path = out / TUNED
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_tuned(out: Path, tuned: dict) -> None:
    """tuned.md: per objective, every trial's settings, validation score and test headline."""
    lines = []
    for name, t in tuned.items():
        lines += [f"### {name} ({t['budget']}, seed {t['seed']}): chose {_settings(t['settings'])}", "",
                  "| settings | validation score (chooses) | " + HEADLINE + " on test [95% CI] |", "|---|---|---|"]
        for trial in t["trials"]:
            head = "—" if trial[HEADLINE] is None else (f"{trial[HEADLINE]:.3f} [{trial[HEADLINE + CI_LOW]:.2f}, "
                                                         f"{trial[HEADLINE + CI_HIGH]:.2f}]")
            mark = " **(chosen)**" if trial["settings"] == t["settings"] else ""
            lines.append(f"| {', '.join(_settings(trial['settings']))}{mark} | {trial[VALIDATION_SCORE]} | {head} |")
        lines.append("")
    write_text_atomic(out / "tuned.md", "\n".join(lines))


def _key(row: dict, cfg: Config) -> tuple:
    """A row's identity: an objective under its settings (`variant`), a budget and a pretraining seed (rows
    of older studies: seed 0). A tuned objective's rows join its untuned ones, never replace them."""
    return variant(row, cfg), row["budget"], row.get("seed", 0)


def variant(row: dict, cfg: Config) -> str:
    """The name a row is tabled and plotted under: its objective, and the tuned settings it trained with
    where they differ from `cfg`'s own (a tuning that chose the params' value changes nothing)."""
    if not row.get("settings"):  # most rows: nothing to compare, no config to read
        return row["objective"]
    params = yaml.safe_load(dump_config(cfg))

    def value(key: str):
        node = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    changed = [f"{k}={json.dumps(v)}" for k, v in row["settings"].items() if value(k) != v]
    return row["objective"] + (f" [{', '.join(changed)}]" if changed else "")


def _committed(out: Path, gflop: "Callable[[str], float]") -> list[dict]:
    """The rows of earlier invocations. A row of the seconds-budgeted study keeps its planned seconds as
    its budget, and its compute is counted the way new rows' is: its steps x the objective's FLOPs per
    step (`gflop`: objective -> FLOPs per step)."""
    path = out / "study.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    for r in rows:
        if "budget_seconds" in r:
            per_step = gflop(r["objective"])
            r["budget"] = f"{r.pop('budget_seconds'):g} s"
            r.setdefault("precision", SECONDS_STUDY_PRECISION)
            r.update(gflop_per_step=round(per_step / 1e9, 4), compute_tflop=round(r["steps"] * per_step / TERA, 3))
    return rows


STUDIED = (*of_kind(HELD_OUT), *of_kind(CONTENT))  # the held-out tasks, then the content controls
PLOTTED = (HEADLINE, *of_kind(HELD_OUT))


def _write(out: Path, rows: list[dict], cfg: Config) -> None:
    """study.json (the rows as measured); the table, seed means, trend and plots of each objective under
    its settings (`variant`: a tuned objective is its own line beside the untuned one)."""
    write_text_atomic(out / "study.json", json.dumps(rows, indent=2) + "\n")
    rows = [{**r, "objective": variant(r, cfg)} for r in rows]
    write_text_atomic(out / "plots" / "study.json", json.dumps(plot_points(rows, PLOTTED), indent=1) + "\n")
    tasks = [t for t in STUDIED if any(t in r for r in rows)]
    lines = ["| objective | budget | seed | steps | compute (TFLOP) | precision | " + HEADLINE + " [95% CI] | "
             + " | ".join(tasks) + " | surprise, zero-shot |", "|---" * (8 + len(tasks)) + "|"]
    for r in rows:
        head = "—" if r[HEADLINE] is None else (f"{r[HEADLINE]:.3f} [{r[HEADLINE + CI_LOW]:.2f}, "
                                                 f"{r[HEADLINE + CI_HIGH]:.2f}]")
        surprise = ", ".join(f"{t} {r[t + '_surprise']:.2f}" for t in STUDIED if r.get(t + "_surprise") is not None)
        lines.append(f"| {r['objective']} | {r['budget']} | {r.get('seed', 0)} | {r['steps']} | {r['compute_tflop']:g} | {r.get('precision', '—')} | {head} | "
                     + " | ".join("—" if r.get(t) is None else f"{r[t]:.3f}" for t in tasks) + f" | {surprise or '—'} |")
    write_text_atomic(out / "study.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "seeds.md", seed_table(rows, tasks))
    write_text_atomic(out / "trend.md", trend_markdown(trends(rows, of_kind(HELD_OUT), cfg.probe_eval.headline_ceiling)))
    _plot(rows, out / "plots" / "study.png")


def _plot(rows: list[dict], dest: Path) -> None:
    """The headline and each temporal task against training compute: one line per objective and precision
    (the seed means at each budget), an objective's colour shared by its precisions (bf16 solid, others
    dashed), and one legend beside the panels, where it hides no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = plot_points(rows, PLOTTED)
    names = list(dict.fromkeys(p["objective"] for p in points))
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(3.2 * len(PLOTTED), 3.6), dpi=110, sharex=True)
    for ax, key in zip(axes, PLOTTED):
        for line in dict.fromkeys(p["line"] for p in points):
            mine = [p for p in points if p["line"] == line and p[key] is not None]
            if not mine:
                continue
            x, y = [p["compute_tflop"] for p in mine], [p[key] for p in mine]
            style = dict(marker="o", markersize=3.5, color=colours(names.index(mine[0]["objective"]) % colours.N),
                         linestyle="-" if mine[0]["precision"] == "bf16" else "--", label=line)
            if key == HEADLINE and all(p[HEADLINE + CI_LOW] is not None for p in mine):
                err = [[p[key] - p[key + CI_LOW] for p in mine], [p[key + CI_HIGH] - p[key] for p in mine]]
                ax.errorbar(x, y, yerr=err, capsize=2, elinewidth=0.6, **style)
            else:
                ax.plot(x, y, **style)
        ceiling = [r.get(f"{key}_supervised") for r in rows if r.get(f"{key}_supervised") is not None]
        frames = [r.get(f"{key}_strongest_baseline") for r in rows if r.get(f"{key}_strongest_baseline") is not None]
        if key == HEADLINE:
            ceiling, frames = [1.0], [0.0]
        if ceiling:
            ax.axhline(ceiling[0], color="k", linewidth=0.8, linestyle="dotted", label="supervised ceiling")
        if frames:
            ax.axhline(frames[0], color="k", linewidth=0.8, linestyle="dashed", label="strongest baseline")
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.set_xscale("log", base=2)  # budgets double: 3 to 96 TFLOP would crowd the small ones into a corner
        ax.set_xlabel("training compute (TFLOP, forward + backward)", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("score (temporal score: 0 = strongest baseline, 1 = ceiling)", fontsize=8)
    handles, labels = axes[-1].get_legend_handles_labels()
    for ax in axes[:-1]:  # a line missing from the last panel still has a legend entry
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, bbox_inches="tight")
    plt.close(fig)
