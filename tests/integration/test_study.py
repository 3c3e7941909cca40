"""`videossl study`: objectives at equal training compute (counted FLOPs), scored by the real steps,
tabled and plotted; rows of the seconds-budgeted study join on the same axis."""
from __future__ import annotations

import json

import pytest
import yaml

from tests.tiny import tiny_config
from videossl.config import ConfigError
from videossl.eval.scores import HEADLINE
from videossl.study import OBJECTIVES, VALIDATION_SCORE, _with, study, tune, validation_score, variant
from videossl.train.loop import step_flops


def test_study_trains_each_objective_for_its_budget_and_writes_table_and_plot(tiny_data, tmp_path):
    # the study's mechanics are under test, not the benchmark: one held-out task read with one probe
    cfg = tiny_config(tmp_path, "pretrain.metrics_port=null", "probe_eval.tasks=[gravity_law]",
                      "probe_eval.probes=[linear]", "register.gate_metrics=[gravity_law.video_chosen]")
    out = tmp_path / "study"
    out.mkdir()
    old = {"objective": "pretext", "budget_seconds": 60.0, "seed": 0, "steps": 7, "compute_seconds": 60.0,
           HEADLINE: 0.1, f"{HEADLINE}_ci_low": 0.0, f"{HEADLINE}_ci_high": 0.2}  # a row of the seconds-budgeted study
    (out / "study.json").write_text(json.dumps([old]))
    per_step = step_flops(_with(cfg, OBJECTIVES["pretext"]), tiny_data)
    assert per_step == step_flops(_with(cfg, OBJECTIVES["pretext"]), tiny_data) > 0  # a count, not a timing
    budget = 3 * per_step / 1e12  # three steps' worth, in TFLOP
    rows = study(cfg, tiny_data, out, budgets=[budget], objectives=["pretext"])
    assert [(r["objective"], r["budget"]) for r in rows] == [("pretext", "60 s"), ("pretext", f"{budget:g} TFLOP")]
    assert rows[0]["compute_tflop"] == round(7 * per_step / 1e12, 3)  # the old row counted the same way
    r = rows[1]
    assert r["steps"] == 3 and r["train_seconds"] > 0 and r[HEADLINE] is not None
    assert r["compute_tflop"] == round(3 * per_step / 1e12, 3) and r["gflop_per_step"] == round(per_step / 1e9, 4)
    assert r[f"{HEADLINE}_ci_low"] <= r[HEADLINE] <= r[f"{HEADLINE}_ci_high"]
    assert (out / "runs" / f"pretext-{budget:g}tflop" / "eval" / "metrics.json").is_file()
    assert json.loads((out / "study.json").read_text()) == rows
    plot = json.loads((out / "plots" / "study.json").read_text())
    assert [p["objective"] for p in plot] == ["pretext"] * 2 and all(p["compute_tflop"] >= 0 for p in plot)
    table = (out / "study.md").read_text()
    assert table.count("\n") == 2 + len(rows) and f"| pretext | {budget:g} TFLOP | 0 | 3 |" in table
    assert rows[0]["precision"] == "fp32" and rows[1]["precision"] in ("fp32", "bf16")
    assert (out / "plots" / "study.png").stat().st_size > 0
    # the trend table (tests/unit/test_study_trend.py): one budget per objective here, so no line yet
    assert (out / "trend.md").read_text().count("\n") == 2
    rows = rows[1:]

    # a later invocation adds its rows beside the committed ones (same objective, budget and seed: replaced),
    # one per pretraining seed; every seed's model is scored on the same benchmark (the params' seed)
    shared = "pretext+contrastive/shared(1:2)"
    more = study(cfg, tiny_data, out, budgets=[budget], objectives=[shared], seeds=[0, 1])
    assert [(r["objective"], r["seed"]) for r in more] == [("pretext", 0), ("pretext", 0), (shared, 0), (shared, 1)]
    assert more[1:2] == rows
    trained = yaml.safe_load((out / "runs" / f"{shared}-{budget:g}tflop" / "pretrain" / "config.yaml").read_text())
    assert trained["pretrain"]["contrastive"]["pretext_views"] is True
    assert trained["pretrain"]["objective"] == {"pretext": 0.5, "contrastive": 1.0} and trained["seed"] == 0
    assert yaml.safe_load((out / "runs" / f"{shared}-{budget:g}tflop-seed1" / "pretrain" / "config.yaml").read_text())["seed"] == 1
    first = json.loads((out / "runs" / f"pretext-{budget:g}tflop" / "eval" / "scores.json").read_text())["gravity_law"]
    for run in (f"{shared}-{budget:g}tflop", f"{shared}-{budget:g}tflop-seed1"):  # the same benchmark clips: the same units, ceiling, baselines
        scored = json.loads((out / "runs" / run / "eval" / "scores.json").read_text())["gravity_law"]
        assert {k: scored[k] for k in ("n_test", "supervised", "frames")} == {k: first[k] for k in ("n_test", "supervised", "frames")}
    assert "| seed |" in (out / "study.md").read_text()
    seeds = (out / "seeds.md").read_text().splitlines()  # the objective trained with two seeds: their means
    assert len(seeds) == 3 and seeds[2].startswith(f"| {budget:g} TFLOP | {more[2]['precision']} | {shared} |"), seeds

    # tune: every combination of the grid, chosen by the validation score (never test); the study then trains
    # the objective with the chosen settings. A bad value fails before anything trains, naming the key.
    with pytest.raises(ConfigError, match="pretrain.lr"):
        tune(cfg, tiny_data, out, "pretext", {"pretrain.lr": [1e-3, -1.0]}, budget)
    no_headline = _with(cfg, ["probe_eval.tasks=[arrow_of_time]", "register.gate_metrics=[arrow_of_time.video_chosen]"])
    with pytest.raises(ConfigError, match="tune chooses by held-out tasks"):
        tune(no_headline, tiny_data, out, "pretext", {"pretrain.lr": [1e-3]}, budget)
    assert not (out / "runs" / "tune").exists()
    chosen = tune(cfg, tiny_data, out, "pretext", {"pretrain.lr": [1e-3, 3e-2], "pretrain.warmup_steps": [1]}, budget)
    trials = chosen["trials"]
    assert [t["settings"] for t in trials] == [{"pretrain.lr": 1e-3, "pretrain.warmup_steps": 1},
                                               {"pretrain.lr": 3e-2, "pretrain.warmup_steps": 1}]
    for i, t in enumerate(trials):
        run = out / "runs" / "tune" / f"pretext-{budget:g}tflop-{i}"
        assert yaml.safe_load((run / "pretrain" / "config.yaml").read_text())["pretrain"]["lr"] == t["settings"]["pretrain.lr"]
        metrics = json.loads((run / "eval" / "scores.json").read_text())
        val = metrics["gravity_law"]["video_chosen_val"]  # the one headline task's validation accuracy
        assert 0 <= val <= 1 and t[VALIDATION_SCORE] == validation_score(metrics) == val and t[HEADLINE] is not None
    best = max(trials, key=lambda t: t[VALIDATION_SCORE])
    assert chosen["settings"] == best["settings"] and chosen[VALIDATION_SCORE] == best[VALIDATION_SCORE]
    assert json.loads((out / "tuned.json").read_text())["pretext"] == chosen
    assert "(chosen)" in (out / "tuned.md").read_text()
    # a second grid extends the first: the trial measured before is kept (not retrained), the new one joins
    extended = tune(cfg, tiny_data, out, "pretext", {"pretrain.lr": [3e-2, 1e-2], "pretrain.warmup_steps": [1]}, budget)
    assert extended["trials"][:2] == trials and extended["trials"][2]["settings"] == {"pretrain.lr": 1e-2,
                                                                                      "pretrain.warmup_steps": 1}
    assert sorted(p.name for p in (out / "runs" / "tune").iterdir()) == [f"pretext-{budget:g}tflop-{i}" for i in range(3)]
    chosen = extended
    assert chosen[VALIDATION_SCORE] == max(t[VALIDATION_SCORE] for t in extended["trials"])
    # the study trains the tuned objective with the chosen settings; at the tuning's own budget and seed, the
    # trial of those settings is that run, taken as it is
    again = study(cfg, tiny_data, out, budgets=[budget], objectives=["pretext"], seeds=[cfg.seed, cfg.seed + 1])
    mine = {r["seed"]: r for r in again if r["objective"] == "pretext" and r["budget"] == f"{budget:g} TFLOP"
            and r.get("settings") == chosen["settings"]}
    [trial] = [t for t in chosen["trials"] if t["settings"] == chosen["settings"]]
    assert {k: v for k, v in mine[cfg.seed].items() if k != "settings"} == {k: v for k, v in trial.items() if k != "settings"}
    tag = "pretext" + ("" if variant(mine[cfg.seed + 1], cfg) == "pretext" else "-tuned")
    trained = yaml.safe_load((out / "runs" / f"{tag}-{budget:g}tflop-seed{cfg.seed + 1}" / "pretrain" / "config.yaml").read_text())
    assert trained["pretrain"]["lr"] == chosen["settings"]["pretrain.lr"] and trained["pretrain"]["warmup_steps"] == 1
