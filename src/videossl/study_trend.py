"""The study's summaries across rows: what several seeds agree on, how the scores move with training
compute, and what compute would reach the targets.

`seed_table`: per objective, budget and precision trained with two seeds or more, each seed's headline
and the seed means of the headline and every task, best mean first within a budget.

For every objective (and precision: the same steps train other weights in bf16 than in fp32) measured
at three or more budgets, each held-out task's score (the mean over seeds at each budget) is fitted by
a straight line against log2 of the training compute: its slope is what one doubling of compute buys.
Where the line rises, the compute at which it would reach a target is where it crosses it:
- level with the strongest baseline (any baseline, its strongest probe): the issue's first target is
  the video model's lower bound above it, so this is a lower bound on that compute;
- 90% of the supervised ceiling (for the headline, whose 1 is the ceiling by construction: 0.9).
An extrapolated compute is also given in hours of training at the rate the rows themselves measured
(their `train_seconds`): the machine that ran them, not a GPU. A target already met at a measured budget is reported as measured. Beyond the largest budget the
line is an extrapolation from a few points, not a measurement: it says which order of magnitude of
compute to try next, not that it will suffice.
"""
from __future__ import annotations

import math

import numpy as np

from videossl.eval.scores import CI_HIGH, CI_LOW, HEADLINE

MIN_BUDGETS = 3              # distinct compute points a line is fitted through
CEILING_SHARE = 0.9          # the target: 90% of the supervised ceiling on every held-out task
MAX_DOUBLINGS = 20          # a line that needs a million times the largest budget says only "far"
MAKE_RUN_TFLOP = 12.0        # training compute of make run's 600 default steps (study budgets are multiples)


def seed_means(rows: list[dict], key: str) -> list[dict]:
    """One point per budget, in order of compute: `key` (and its interval) averaged over the seeds' rows."""
    by_budget: dict = {}
    for r in rows:
        by_budget.setdefault(r["budget"], []).append(r)
    keys = [k for k in (key, key + CI_LOW, key + CI_HIGH, "compute_tflop") if all(k in r for r in rows)]
    return sorted(({k: float(np.mean([r[k] for r in same])) for k in keys} for same in by_budget.values()),
                  key=lambda r: r["compute_tflop"])


def plot_points(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """The study's lines, as its plots draw them: one per objective (as `study.variant` names it) and precision (the same steps train other
    weights in bf16 than in fp32, so an objective's fp32 and bf16 rows are two lines, not one), one point
    per budget: `keys` (and the headline's interval) averaged over the seeds, None where a seed lacks it."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["objective"], r.get("precision", "—")), {}).setdefault(r["budget"], []).append(r)
    out = []
    for (objective, precision), budgets in groups.items():
        for same in budgets.values():
            point = {"objective": objective, "precision": precision, "line": f"{objective} ({precision})",
                     "seeds": len(same), "compute_tflop": round(float(np.mean([r["compute_tflop"] for r in same])), 3)}
            for k in (*keys, HEADLINE + CI_LOW, HEADLINE + CI_HIGH):
                values = [r.get(k) for r in same]
                point[k] = None if None in values else round(float(np.mean(values)), 4)
            out.append(point)
    return sorted(out, key=lambda p: (p["line"], p["compute_tflop"]))


def seed_table(rows: list[dict], tasks: list[str]) -> str:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["budget"], r.get("precision", "—"), r["objective"]), []).append(r)
    found = [(k, sorted(v, key=lambda r: r.get("seed", 0))) for k, v in groups.items() if len(v) >= 2]
    def order(kv):  # budgets in order ("12 TFLOP", "60 s": unit, amount), the best mean first within one
        (budget, precision, _), same = kv
        amount, unit = budget.split()
        return unit, float(amount), precision, -np.mean([r[HEADLINE] for r in same])
    found.sort(key=order)
    lines = [f"| budget | precision | objective | {HEADLINE} per seed | mean | " + " | ".join(tasks) + " |",
             "|---" * (5 + len(tasks)) + "|"]
    for (budget, precision, objective), same in found:
        per_seed = ", ".join(f"{r[HEADLINE]:.3f} ({r.get('seed', 0)})" for r in same)
        means = [np.mean([r[t] for r in same]) if all(r.get(t) is not None for r in same) else None for t in tasks]
        lines.append(f"| {budget} | {precision} | {objective} | {per_seed} | {np.mean([r[HEADLINE] for r in same]):.3f} | "
                     + " | ".join("—" if m is None else f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines) + "\n"


def _crossing(points: list[dict], key: str, slope: float, intercept: float, target: float,
              seconds_per_tflop: float | None) -> str:
    """Where the fitted line reaches `target`: measured if a budget's mean already does; an extrapolated
    compute also in hours at the rows' own measured training rate (`seconds_per_tflop`)."""
    met = [p["compute_tflop"] for p in points if p[key] >= target]
    if met:
        return f"first measured at {_tflop(min(met))}"
    if slope <= 0:
        return "not rising"
    beyond = (target - intercept) / slope - math.log2(points[-1]["compute_tflop"])  # doublings past the largest
    if beyond > MAX_DOUBLINGS:
        return f"> {MAX_DOUBLINGS} doublings past {_tflop(points[-1]['compute_tflop'])}"
    tflop = points[-1]["compute_tflop"] * 2 ** beyond
    hours = f", ~{_number(tflop * seconds_per_tflop / 3600)} h here" if seconds_per_tflop else ""
    return f"~{_tflop(tflop)} ({_number(tflop / MAKE_RUN_TFLOP)}x make run{hours})"


def _number(v: float) -> str:
    return f"{v:.2g}" if v < 10 else f"{v:,.0f}" if v < 1e5 else f"{v:.1e}"


def _tflop(v: float) -> str:
    return f"{_number(v)} TFLOP"


def trends(rows: list[dict], tasks: tuple[str, ...], min_ceiling: float) -> list[dict]:
    """Per objective and precision with MIN_BUDGETS budgets or more, per task of `tasks` whose supervised
    ceiling reaches `min_ceiling` (the headline's tasks: probe_eval.headline_ceiling) and the headline:
    the fit and where it reaches each target."""
    out = []
    groups = dict.fromkeys((r["objective"], r.get("precision", "—")) for r in rows)
    for objective, precision in groups:
        mine = [r for r in rows if r["objective"] == objective and r.get("precision", "—") == precision]
        for key in (HEADLINE, *tasks):
            have = [r for r in mine if r.get(key) is not None]
            points = seed_means(have, key)
            if len(points) < MIN_BUDGETS:
                continue
            x = np.log2([p["compute_tflop"] for p in points])
            slope, intercept = (float(v) for v in np.polyfit(x, [p[key] for p in points], 1))
            if key == HEADLINE:  # 0 = the strongest baseline, 1 = the ceiling, by construction
                baseline, ceiling = 0.0, 1.0
            else:
                baseline = float(np.mean([r[f"{key}_strongest_baseline"] for r in have]))
                ceiling = float(np.mean([r[f"{key}_supervised"] for r in have]))
                if ceiling < min_ceiling:  # not a headline task: no target to reach
                    continue
            timed = [r["train_seconds"] / r["compute_tflop"] for r in have if r.get("train_seconds") and r["compute_tflop"]]
            rate = float(np.mean(timed)) if timed else None  # seconds per TFLOP on the machines that ran them
            out.append({"objective": objective, "precision": precision, "task": key,
                        "budgets": [p["compute_tflop"] for p in points], "largest": points[-1][key],
                        "per_doubling": slope, "strongest_baseline": baseline,
                        "reaches_baseline": _crossing(points, key, slope, intercept, baseline, rate),
                        "reaches_ceiling_share": _crossing(points, key, slope, intercept, CEILING_SHARE * ceiling,
                                                           rate)})
    return out


def trend_markdown(found: list[dict]) -> str:
    lines = ["| objective | precision | budgets (TFLOP) | task | at the largest | per doubling | strongest baseline | "
             f"level with it | {CEILING_SHARE:.0%} of the ceiling |", "|---" * 9 + "|"]
    for t in found:
        budgets = ", ".join(f"{b:.3g}" for b in t["budgets"])
        lines.append(f"| {t['objective']} | {t['precision']} | {budgets} | {t['task']} | {t['largest']:.3f} | "
                     f"{t['per_doubling']:+.3f} | {t['strongest_baseline']:.3f} | {t['reaches_baseline']} | "
                     f"{t['reaches_ceiling_share']} |")
    return "\n".join(lines) + "\n"
